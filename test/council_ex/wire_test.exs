defmodule CouncilEx.WireTest do
  use ExUnit.Case, async: true

  alias CouncilEx.Wire

  test "round names and councils become existing atoms, others stay binaries" do
    assert Wire.round_name("vote") == :vote
    name = "never_an_atom_#{System.unique_integer([:positive])}"
    assert Wire.round_name(name) == name
    assert Wire.council("Elixir.CouncilEx.Test.MockCouncil") == CouncilEx.Test.MockCouncil
    assert Wire.council("dynamic:x") == "dynamic:x"
    assert Wire.council("Elixir.No#{System.unique_integer([:positive])}") =~ "Elixir.No"
  end

  test "summary/1 converts started_at and current_round" do
    s =
      Wire.summary(%{
        run_id: "r",
        council: "dynamic:x",
        registry: "R",
        status: :running,
        current_round: %{name: "vote", idx: 2},
        rounds_completed: 2,
        started_at: 1_700_000_000_123_456
      })

    assert %{current_round: %{name: :vote, idx: 2}, started_at: %DateTime{} = at} = s
    assert DateTime.to_unix(at, :microsecond) == 1_700_000_000_123_456
    assert Wire.summary(%{current_round: nil, started_at: 0}).current_round == nil
  end

  test "events and results" do
    rr = %{name: "vote", idx: 0, type: "vote", members: [], aggregate: nil, text: nil}

    assert {:round_completed, "r", :vote, %{name: :vote}} =
             Wire.event({:round_completed, "r", "vote", rr})

    assert {:run_completed, "r", %{rounds: [%{name: :vote}]}} =
             Wire.event({:run_completed, "r", %{final: "x", rounds: [rr], errors: []}})

    assert {:error, {:failed, ["e"], %{rounds: [%{name: :vote}]}}} =
             Wire.reply({:error, {:failed, ["e"], %{final: nil, rounds: [rr], errors: ["e"]}}})

    assert Wire.topic("abc") == "council_ex:run:abc"
    assert Wire.topic("council_ex:run:abc") == "council_ex:run:abc"
    assert Wire.registry_name(CouncilEx.Runner.Registry) == "CouncilEx.Runner.Registry"
  end
end
