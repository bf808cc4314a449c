defmodule CouncilEx.PubSub.RelayTest do
  # Local dispatch of the relay, fed by hand as the C node would feed it
  # (tagged: {:council_ex_event, topic, event}).
  use ExUnit.Case, async: false
  @moduletag :cnode

  import CouncilEx.Test.Helpers
  alias CouncilEx.PubSub.Relay

  setup do
    run_id = "relay-#{System.unique_integer([:positive])}"
    topic = "council_ex:run:" <> run_id
    relay = Process.whereis(Relay)

    # These topics have no run, so the C node never ends the relay's
    # subscriptions (a fed terminal event only ends the relay's side).
    on_exit(fn ->
      svc = {:council_ex, CouncilEx.node()}

      for t <- [topic, topic <> ":sub:panel", topic <> ":sub:m"],
          do: GenServer.call(svc, {:unsubscribe, t, relay})
    end)

    {:ok, run_id: run_id, topic: topic, relay: relay}
  end

  defp feed(relay, topic, events),
    do: Enum.each(events, &send(relay, {:council_ex_event, topic, &1}))

  test "dispatches events in order, converting round names; the terminal event ends the topic",
       %{run_id: id, topic: topic, relay: relay} do
    parent = self()
    assert :ok = Relay.subscribe(topic, self())

    other =
      spawn_link(fn ->
        receive do
          {:run_completed, ^id, _} = ev -> send(parent, {:other, ev})
        end

        receive do: (:never -> :ok)
      end)

    assert :ok = Relay.subscribe(topic, other)
    assert Enum.sort(Relay.subscribers(topic)) == Enum.sort([self(), other])

    feed(relay, topic, [
      {:run_started, id, "Elixir.CouncilEx.Test.MockCouncil", "in"},
      {:round_started, id, "vote", 0},
      {:member_started, id, "vote", "a"},
      {:member_token, id, "vote", "a", "x"},
      {:member_completed, id, "vote", "a", %{member_id: "a", status: :ok}},
      {:round_completed, id, "vote", %{name: "vote", idx: 0}},
      {:run_completed, id, %{final: "x", rounds: [%{name: "vote"}], errors: []}}
    ])

    assert_receive {:run_started, ^id, CouncilEx.Test.MockCouncil, "in"}
    assert_receive {:round_started, ^id, :vote, 0}
    assert_receive {:member_started, ^id, :vote, "a"}
    assert_receive {:member_token, ^id, :vote, "a", "x"}
    assert_receive {:member_completed, ^id, :vote, "a", %{member_id: "a"}}
    assert_receive {:round_completed, ^id, :vote, %{name: :vote}}
    assert_receive {:run_completed, ^id, %{final: "x", rounds: [%{name: :vote}]}}
    assert_receive {:other, {:run_completed, ^id, _}}

    # Nothing follows a terminal event: the topic is forgotten, and so are
    # its subscribers (no longer monitored for it).
    assert Relay.subscribers(topic) == []
    feed(relay, topic, [{:run_started, id, "x", "late"}])
    refute_receive {:run_started, ^id, _, _}, 100
  end

  test "the topic of a tagged event decides, not its run id", %{topic: topic, relay: relay} do
    sub_topic = topic <> ":sub:panel"
    assert :ok = Relay.subscribe(sub_topic, self())
    feed(relay, sub_topic, [{:round_started, "nested-run", "vote", 0}])
    assert_receive {:round_started, "nested-run", :vote, 0}
    feed(relay, sub_topic, [{:run_failed, "nested-run", ["e"], %{final: nil, rounds: []}}])
    assert_receive {:run_failed, "nested-run", ["e"], _}
    # a sub-council topic outlives each nested run: the next one is seen too
    assert Relay.subscribers(sub_topic) == [self()]
    feed(relay, sub_topic, [{:run_started, "nested-run-2", "inner", "q"}])
    assert_receive {:run_started, "nested-run-2", _, "q"}
    # the topic's own run ends its topic
    feed(relay, topic, [{:run_completed, topic_run_id(topic), %{final: "x", rounds: []}}])
    Relay.unsubscribe(sub_topic, self())
    assert Relay.subscribers(sub_topic) == []
  end

  defp topic_run_id("council_ex:run:" <> id), do: id

  test "a subscriber that exits is removed", %{topic: topic} do
    pid = spawn(fn -> receive do: (:stop -> :ok) end)
    assert :ok = Relay.subscribe(topic, pid)
    assert Relay.subscribers(topic) == [pid]
    send(pid, :stop)
    eventually(fn -> Relay.subscribers(topic) == [] end)
  end

  test "overflow notices reach subscribers and end the topic", %{topic: topic, relay: relay} do
    assert :ok = Relay.subscribe(topic, self())
    send(relay, {:council_ex_overflow, topic, 12})
    assert_receive {:council_ex_overflow, ^topic, 12}
    assert Relay.subscribers(topic) == []
  end

  test "no forwarder processes: the relay links to nothing but its supervisor",
       %{topic: topic, relay: relay} do
    assert :ok = Relay.subscribe(topic <> ":sub:m", self())
    {:links, links} = Process.info(relay, :links)
    assert links == [Process.whereis(CouncilEx.AppSupervisor)]
    Relay.unsubscribe(topic <> ":sub:m", self())
  end
end
