defmodule CouncilEx.PubSub.RelayTest do
  # Local dispatch of the relay, fed by hand as the C node would feed it.
  use ExUnit.Case, async: false

  alias CouncilEx.PubSub.Relay

  setup do
    run_id = "relay-#{System.unique_integer([:positive])}"
    {:ok, run_id: run_id, topic: "council_ex:run:" <> run_id}
  end

  test "dispatches events in order, converting round names", %{run_id: id, topic: topic} do
    relay = Process.whereis(Relay)
    assert Relay.prepare(topic, self()) == [relay]
    # A second local subscriber of the same topic does not subscribe the relay again.
    other = spawn_link(fn -> receive do: (:never -> :ok) end)
    assert Relay.prepare(topic, other) == []

    events = [
      {:run_started, id, "Elixir.CouncilEx.Test.MockCouncil", "in"},
      {:round_started, id, "vote", 0},
      {:member_started, id, "vote", "a"},
      {:member_token, id, "vote", "a", "x"},
      {:member_completed, id, "vote", "a", %{member_id: "a", status: :ok}},
      {:round_completed, id, "vote", %{name: "vote", idx: 0}},
      {:run_completed, id, %{final: "x", rounds: [], errors: []}}
    ]

    Enum.each(events, &send(relay, &1))

    assert_receive {:run_started, ^id, CouncilEx.Test.MockCouncil, "in"}
    assert_receive {:round_started, ^id, :vote, 0}
    assert_receive {:member_started, ^id, :vote, "a"}
    assert_receive {:member_token, ^id, :vote, "a", "x"}
    assert_receive {:member_completed, ^id, :vote, "a", %{member_id: "a"}}
    assert_receive {:round_completed, ^id, :vote, %{name: :vote}}
    assert_receive {:run_completed, ^id, %{final: "x"}}
    Relay.abort(topic, other)
    Relay.abort(topic, self())
  end

  test "a subscriber that exits is removed", %{topic: topic} do
    pid = spawn(fn -> receive do: (:stop -> :ok) end)
    Relay.prepare(topic, pid)
    assert Relay.subscribers(topic) == [pid]
    send(pid, :stop)
    CouncilEx.Test.Helpers.eventually(fn -> Relay.subscribers(topic) == [] end)
  end

  test "overflow notices reach subscribers", %{topic: topic} do
    Relay.prepare(topic, self())
    send(Process.whereis(Relay), {:council_ex_overflow, topic, 12})
    assert_receive {:council_ex_overflow, ^topic, 12}
    Relay.abort(topic, self())
  end
end
