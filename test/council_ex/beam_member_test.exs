defmodule CouncilEx.BeamMemberTest do
  use ExUnit.Case, async: false
  @moduletag :cnode

  import CouncilEx.Test.Helpers
  alias CouncilEx.Test.BeamCouncil

  test "Elixir-module members answer through the beam provider; a raise is a member error" do
    id = run_id()
    {:ok, _} = CouncilEx.start(BeamCouncil, "hello", run_id: id, subscribe: true)
    events = collect_events(id)
    assert is_list(events), "no terminal event: #{inspect(events)}"

    tokens = for {:member_token, _, _, "echo", chunk} <- events, do: chunk
    assert tokens == ["echo ", "says"]

    results =
      for {:member_completed, _, :independent_analysis, m, r} <- events, into: %{}, do: {m, r}

    assert %{status: :ok, text: "echo: \"hello\""} = results["echo"]
    assert %{status: :error, error: error, attempts: 1} = results["boom"]
    assert error =~ "member exploded"
    assert %{status: :ok} = results["mock"]
    assert {:run_completed, ^id, _} = List.last(events)
  end
end
