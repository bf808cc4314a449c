defmodule Mix.Tasks.Compile.CouncilMake do
  @shortdoc "Builds the C node and libraries into priv/ with `make priv`"
  @moduledoc """
  Mix compiler that runs `make priv` in the project root, so that
  `mix compile` (and therefore `mix test`, `mix run` and `mix release`)
  builds `priv/council_node` and the C libraries, then makes the
  application's own priv dir (`_build/ENV/lib/council_ex/priv`, what
  `:code.priv_dir(:council_ex)` returns) point at them: a symlink, or a
  copy when the build is embedded. That works the same for this
  repository, a `path:` or `git:` dependency and a release, on the first
  compile.

  Listed first in the project's compilers:

      compilers: [:council_make] ++ Mix.compilers()

  Quiet by default: one line when the C code is (re)built, the whole
  output of `make` only when it fails. The C node is built against the
  erl_interface of the OTP that runs Mix (`:code.lib_dir(:erl_interface)`).

  Environment:

    * `V=1` (or `mix compile --verbose`) shows every command `make` runs.
    * `COUNCIL_EX_SKIP_MAKE=1` skips the C build (for working on the
      Elixir side while the C tree does not build).
    * `MAKE` names the make program (default `make`).
    * `MAKEFLAGS` is passed on; without a `-j` in it, make runs one job
      per scheduler.
  """
  use Mix.Task.Compiler

  @impl Mix.Task.Compiler
  @spec run([String.t()]) :: {:ok | :noop | :error, [Mix.Task.Compiler.Diagnostic.t()]}
  def run(args) do
    if System.get_env("COUNCIL_EX_SKIP_MAKE") in ["1", "true"] do
      {:noop, []}
    else
      verbose = "--verbose" in args or System.get_env("V") not in [nil, "", "0"]
      make(verbose)
    end
  end

  defp make(verbose) do
    root = Path.dirname(Mix.Project.project_file() || Path.expand("mix.exs"))
    make = System.get_env("MAKE", "make")

    case System.find_executable(make) do
      nil ->
        error("#{make} not found in PATH; cannot build priv/")

      exe ->
        result =
          cond do
            verbose ->
              build(exe, root, ["V=1"], true)

            up_to_date?(exe, root) ->
              :noop

            true ->
              Mix.shell().info("Compiling the C node (make priv)")
              build(exe, root, ["-s"], false)
          end

        case result do
          {:error, _} = e ->
            e

          status ->
            link_priv()
            {status, []}
        end
    end
  end

  # `make -q` answers 0 when nothing needs doing (and prints nothing).
  defp up_to_date?(exe, root) do
    {_, status} = System.cmd(exe, ["-q"] ++ ei_dir() ++ ["priv"], cd: root, stderr_to_stdout: true)
    status == 0
  end

  defp build(exe, root, extra, stream?) do
    args = extra ++ jobs() ++ ei_dir() ++ ["--no-print-directory", "priv"]

    opts = [cd: root, stderr_to_stdout: true]
    opts = if stream?, do: [{:into, IO.stream(:stdio, :line)} | opts], else: opts

    case System.cmd(exe, args, opts) do
      {_, 0} ->
        :ok

      {out, status} ->
        unless stream?, do: IO.write(out)
        error("`make priv` exited with status #{status}")
    end
  end

  # The erl_interface of the OTP this VM runs (asdf, kerl, a source build,
  # Debian's): the C node is built against what it will talk to. The
  # Makefile asks the `erl` on PATH otherwise.
  defp ei_dir do
    case :code.lib_dir(:erl_interface) do
      dir when is_list(dir) ->
        dir = List.to_string(dir)
        if File.regular?(Path.join([dir, "include", "ei.h"])), do: ["EI_DIR=" <> dir], else: []

      _ ->
        []
    end
  end

  defp jobs do
    flags = System.get_env("MAKEFLAGS", "")

    if flags =~ ~r/(^|\s)-?j|--jobs|--jobserver/,
      do: [],
      else: ["-j#{System.schedulers_online()}"]
  end

  # Mix links (or copies) priv/ into the app dir before the compilers run,
  # and only when priv/ exists then: on a first build it does not yet.
  # Doing it again now that make has filled priv/ is what makes
  # :code.priv_dir(:council_ex) hold the C node on the first compile.
  defp link_priv do
    Mix.Project.build_structure(Mix.Project.config())
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
