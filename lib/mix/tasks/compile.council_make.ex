defmodule Mix.Tasks.Compile.CouncilMake do
  @shortdoc "Builds the C node and libraries into priv/ with `make priv`"
  @moduledoc """
  Mix compiler that runs `make priv` in the project root, so that
  `mix compile` (and therefore `mix test` and `mix run`) builds
  `priv/council_node` and the C libraries.

  Listed first in the project's compilers:

      compilers: [:council_make] ++ Mix.compilers()

  Environment:

    * `COUNCIL_EX_SKIP_MAKE=1` skips the C build (for working on the
      Elixir side while the C tree does not build).
    * `MAKE` names the make program (default `make`).
  """
  use Mix.Task.Compiler

  @impl Mix.Task.Compiler
  @spec run([String.t()]) :: {:ok | :noop | :error, [Mix.Task.Compiler.Diagnostic.t()]}
  def run(_args) do
    if System.get_env("COUNCIL_EX_SKIP_MAKE") in ["1", "true"] do
      {:noop, []}
    else
      make()
    end
  end

  defp make do
    root = Path.dirname(Mix.Project.project_file() || "mix.exs")
    make = System.get_env("MAKE", "make")

    case System.find_executable(make) do
      nil ->
        error("#{make} not found in PATH; cannot build priv/")

      exe ->
        {_, status} =
          System.cmd(exe, ["priv"],
            cd: root,
            stderr_to_stdout: true,
            into: IO.stream(:stdio, :line)
          )

        if status == 0, do: {:ok, []}, else: error("`make priv` exited with status #{status}")
    end
  end

  defp error(message) do
    Mix.shell().error("council_make: " <> message)

    {:error,
     [
       %Mix.Task.Compiler.Diagnostic{
         compiler_name: "council_make",
         file: "Makefile",
         position: nil,
         message: message,
         severity: :error
       }
     ]}
  end
end
