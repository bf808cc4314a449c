# The compiler task lives in lib/ but Mix needs it before lib/ is compiled:
# load it from source once (the compiled copy in _build replaces it later).
unless Code.ensure_loaded?(Mix.Tasks.Compile.CouncilMake) do
  Code.compiler_options(ignore_module_conflict: true)
  Code.require_file("lib/mix/tasks/compile.council_make.ex", __DIR__)
end

defmodule CouncilEx.MixProject do
  use Mix.Project

  def project do
    [
      app: :council_ex,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:council_make] ++ Mix.compilers(),
      deps: [],
      elixirc_paths: elixirc_paths(Mix.env()),
      # test/cnode/ holds the C node's own BEAM tests, run by
      # scripts/run-cnode-tests with plain `elixir`, not by `mix test`.
      test_paths: ["test/council_ex"],
      test_coverage: [ignore_modules: []]
    ]
  end

  def application do
    [
      mod: {CouncilEx.Application, []},
      extra_applications: [:logger, :crypto]
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
