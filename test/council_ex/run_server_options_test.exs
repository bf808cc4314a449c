defmodule CouncilEx.RunServerOptionsTest do
  # Everything here is decided before anything is sent to the C node.
  use ExUnit.Case, async: false

  alias CouncilEx.RunServer
  alias CouncilEx.Test.MockCouncil

  defp opts(extra \\ []) do
    Keyword.merge(
      [run_id: "r1", council: MockCouncil, spec: MockCouncil.__council__(), input: "q"],
      extra
    )
  end

  test "missing required options raise ArgumentError" do
    for key <- [:run_id, :council, :spec, :input] do
      assert_raise ArgumentError, ~r/missing required option #{inspect(key)}/, fn ->
        RunServer.start_link(Keyword.delete(opts(), key))
      end

      assert_raise ArgumentError, ~r/missing required option/, fn ->
        RunServer.start(Keyword.delete(opts(), key))
      end
    end
  end

  test "bad option values raise ArgumentError" do
    assert_raise ArgumentError, ~r/unknown option :colour/, fn ->
      RunServer.start(opts(colour: :red))
    end

    assert_raise ArgumentError, ~r/:spec must be a %CouncilEx.Spec{}/, fn ->
      RunServer.start(opts(spec: %{}))
    end

    assert_raise ArgumentError, ~r/:run_id must be/, fn -> RunServer.start(opts(run_id: 42)) end
    assert_raise ArgumentError, ~r/:council must be/, fn -> RunServer.start(opts(council: 42)) end
    assert_raise ArgumentError, ~r/:callers must be/, fn -> RunServer.start(opts(callers: [:x])) end
    assert_raise ArgumentError, ~r/:registry must be/, fn -> RunServer.start(opts(registry: 42)) end
    assert_raise ArgumentError, ~r/keyword list/, fn -> RunServer.start(%{}) end
  end

  test "CouncilEx.start/3 validates council and options" do
    assert_raise ArgumentError, ~r/is not a council/, fn -> CouncilEx.start(String, "q") end
    assert_raise ArgumentError, ~r/expected a council module/, fn -> CouncilEx.start(%{}, "q") end

    assert_raise ArgumentError, ~r/unknown option :bogus/, fn ->
      CouncilEx.start(MockCouncil, "q", bogus: 1)
    end

    assert_raise ArgumentError, ~r/:subscribe must be a boolean/, fn ->
      CouncilEx.start(MockCouncil, "q", subscribe: :yes)
    end

    assert_raise ArgumentError, ~r/is not a council/, fn -> CouncilEx.run(Enum, "q") end
  end

  test "child_spec/1 is temporary and keyed by run id" do
    assert %{id: {RunServer, "r1"}, restart: :temporary, start: {RunServer, :start_link, [_]}} =
             RunServer.child_spec(opts())
  end

  test "default_registry/0 and its app-config override" do
    assert RunServer.default_registry() == CouncilEx.Runner.Registry
    Application.put_env(:council_ex, :runner_registry, MyApp.RunReg)

    try do
      assert RunServer.default_registry() == MyApp.RunReg
      assert RunServer.via("x") == {:via, CouncilEx.Registry, {MyApp.RunReg, "x"}}
    after
      Application.delete_env(:council_ex, :runner_registry)
    end
  end

  test "via/2 names the library's via module" do
    assert RunServer.via("x") == {:via, CouncilEx.Registry, {CouncilEx.Runner.Registry, "x"}}
    assert RunServer.via("x", registry: Other) == {:via, CouncilEx.Registry, {Other, "x"}}
    assert CouncilEx.Registry.register_name({Other, "x"}, self()) == :no
  end
end
