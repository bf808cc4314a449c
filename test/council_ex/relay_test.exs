defmodule CouncilEx.PubSub.RelayTest do
  # Local dispatch of the relay, fed by hand as the C node would feed it
  # (tagged: {:council_ex_event, topic, event}).
  use ExUnit.Case, async: false
  @moduletag :cnode
  # the C node itself (its process, distribution, the relay)
  @moduletag :cnode_only

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
    # a call answered after the relay handled it: it sent nothing meanwhile
    assert Relay.subscribers(topic) == []
    refute_received {:run_started, ^id, _, _}
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

  test "a batch is dispatched event by event, in order; its terminal event ends the topic",
       %{run_id: id, topic: topic, relay: relay} do
    assert :ok = Relay.subscribe(topic, self())
    tokens = for k <- 1..50, do: {:member_token, id, "vote", "a", "t#{k}"}

    send(relay, {:council_ex_events, topic,
                 [{:run_started, id, "Elixir.CouncilEx.Test.MockCouncil", "in"},
                  {:round_started, id, "vote", 0} | tokens]})
    send(relay, {:council_ex_events, topic,
                 [{:run_completed, id, %{final: "x", rounds: [], errors: []}}]})

    # the mailbox in arrival order, exactly
    got = for _ <- 1..53, do: (receive do: (m -> m))
    assert got ==
             [{:run_started, id, CouncilEx.Test.MockCouncil, "in"}, {:round_started, id, :vote, 0}] ++
               for({:member_token, _, _, _, c} <- tokens, do: {:member_token, id, :vote, "a", c}) ++
               [{:run_completed, id, %{final: "x", rounds: [], errors: []}}]
    assert Relay.subscribers(topic) == []
    assert Process.info(self(), :messages) == {:messages, []}
  end

  test "an overflow notice reaches subscribers; the terminal event still ends the topic",
       %{topic: topic, relay: relay} do
    assert :ok = Relay.subscribe(topic, self())
    send(relay, {:council_ex_overflow, topic, 12})
    assert_receive {:council_ex_overflow, ^topic, 12}
    assert Relay.subscribers(topic) == [self()]
    "council_ex:run:" <> id = topic
    send(relay, {:council_ex_event, topic, {:run_cancelled, id, %{final: nil, rounds: [], errors: []}}})
    assert_receive {:run_cancelled, ^id, _}
    assert Relay.subscribers(topic) == []
  end

  defp node_subscriptions do
    {:ok, %{subscriptions: n}} = GenServer.call({:council_ex, CouncilEx.node()}, :stats)
    n
  end

  # The relay has sub's subscribe/2 call (sub is among the topic's
  # subscribers) and holds its answer among those waiting for the start
  # under way.
  defp assert_held_subscribe(topic, sub) do
    eventually(fn -> sub in Relay.subscribers(topic) end)
    assert %{inflight: %{^topic => %{waiters: waiters}}} = :sys.get_state(Relay)
    assert Enum.any?(waiters, &match?({^sub, _}, &1))
    refute_received {:subscribed, ^sub, _}
  end

  # Stands in for a run pid the C node would return.
  defp fake_run, do: spawn(fn -> receive do: (:never -> :ok) end)

  test "start_subscribed/3: the start carries the relay's subscription when it has none; events that come meanwhile are held",
       %{run_id: id, topic: topic, relay: relay} do
    before = Relay.stats()

    # A refused start: what came for the topic meanwhile is dropped.
    assert {:error, :already_started} =
             Relay.start_subscribed(topic, self(), fn entries ->
               assert entries == [{relay, :batched}]

               feed(relay, topic, [
                 {:run_started, id, "x", "theirs"},
                 {:round_started, id, "vote", 0}
               ])

               assert %{starts: 1, subscriptions: 0} = Relay.stats()
               {:error, :already_started}
             end)

    # answered after the relay handled what was fed: nothing came of it
    assert Relay.stats() == before
    refute_received {_, ^id, _, _}

    # A start that succeeds: the held events go out first, in order, and
    # before start_subscribed/3 returns; the next ones directly.
    run = fake_run()

    assert {:ok, ^run} =
             Relay.start_subscribed(topic, self(), fn [{^relay, :batched}] ->
               feed(relay, topic, [{:run_started, id, "x", "mine"}, {:round_started, id, "vote", 0}])

               Relay.stats()
               {:ok, run}
             end)

    assert {:messages, [{:run_started, ^id, _, "mine"}, {:round_started, ^id, :vote, 0}]} =
             Process.info(self(), :messages)

    assert Relay.subscribers(topic) == [self()]
    assert %{remote: remote, starts: 0} = Relay.stats()
    assert remote == before.remote + 1

    feed(relay, topic, [
      {:member_started, id, "vote", "a"},
      {:run_completed, id, %{final: "x", rounds: [], errors: []}}
    ])

    assert [
             {:run_started, ^id, _, "mine"},
             {:round_started, ^id, :vote, 0},
             {:member_started, ^id, :vote, "a"},
             {:run_completed, ^id, _}
           ] = collect_events(id, 10_000)

    assert Relay.stats() == before
  end

  test "start_subscribed/3 with the relay subscribed to the topic already: no subscription in the start; a refused caller gets nothing",
       %{run_id: id, topic: topic, relay: relay} do
    before = Relay.stats()
    subs_before = node_subscriptions()
    parent = self()

    other =
      spawn_link(fn ->
        :ok = Relay.subscribe(topic, self())
        send(parent, :subscribed)
        receive do: ({:round_started, ^id, :vote, 0} = ev -> send(parent, {:other, ev}))
      end)

    assert_receive :subscribed
    assert node_subscriptions() == subs_before + 1

    assert {:error, :already_started} =
             Relay.start_subscribed(topic, self(), fn entries ->
               assert entries == []
               feed(relay, topic, [{:round_started, id, "vote", 0}])
               {:error, :already_started}
             end)

    assert_receive {:other, {:round_started, ^id, :vote, 0}}
    # the other subscriber has exited: the relay leaves the topic
    eventually(fn -> Relay.stats() == before end)
    # (that call was answered after the relay dispatched the event)
    refute_received {:round_started, ^id, _, _}
    assert Relay.subscribers(topic) == []
    assert node_subscriptions() == subs_before
    refute Process.alive?(other)
  end

  test "subscribe/2 while a start carrying the relay's subscription is under way waits for its outcome",
       %{run_id: id, topic: topic, relay: relay} do
    before = Relay.stats()
    subs_before = node_subscriptions()
    parent = self()

    subscriber = fn ->
      spawn_link(fn ->
        send(parent, {:subscribed, self(), Relay.subscribe(topic, self())})

        receive do
          {:round_started, ^id, :vote, 0} = ev -> send(parent, {:got, self(), ev})
        end

        receive do: (:stop -> :ok)
      end)
    end

    # The start is refused: the relay then subscribes on its own for the
    # subscriber that came meanwhile.
    assert {:error, :already_started} =
             Relay.start_subscribed(topic, self(), fn [{^relay, :batched}] ->
               sub = subscriber.()
               send(parent, {:sub, sub})
               assert_held_subscribe(topic, sub)
               {:error, :already_started}
             end)

    assert_receive {:sub, sub}
    assert_receive {:subscribed, ^sub, :ok}
    assert Relay.subscribers(topic) == [sub]
    assert %{remote: remote, starts: 0} = Relay.stats()
    assert remote == before.remote + 1
    assert node_subscriptions() == subs_before + 1
    feed(relay, topic, [{:round_started, id, "vote", 0}])
    assert_receive {:got, ^sub, {:round_started, ^id, :vote, 0}}
    refute_received {:round_started, ^id, _, _}
    send(sub, :stop)
    eventually(fn -> Relay.stats() == before end)
    assert node_subscriptions() == subs_before

    # The start succeeds: its subscription serves the subscriber too.
    run = fake_run()

    assert {:ok, ^run} =
             Relay.start_subscribed(topic, self(), fn [{^relay, :batched}] ->
               sub = subscriber.()
               send(parent, {:sub, sub})
               assert_held_subscribe(topic, sub)
               {:ok, run}
             end)

    assert_receive {:sub, sub}
    assert_receive {:subscribed, ^sub, :ok}
    assert Enum.sort(Relay.subscribers(topic)) == Enum.sort([self(), sub])
    feed(relay, topic, [{:round_started, id, "vote", 0}])
    assert_receive {:got, ^sub, {:round_started, ^id, :vote, 0}}
    assert_receive {:round_started, ^id, :vote, 0}
    feed(relay, topic, [{:run_completed, id, %{final: nil, rounds: [], errors: []}}])
    assert_receive {:run_completed, ^id, _}
    send(sub, :stop)
    eventually(fn -> Relay.stats() == before end)
  end

  test "start_subscribed/3: a process that dies while its start is under way is forgotten; a raising start too",
       %{topic: topic, relay: relay} do
    before = Relay.stats()
    victim = spawn(fn -> receive do: (:never -> :ok) end)
    run = fake_run()

    assert {:ok, ^run} =
             Relay.start_subscribed(topic, victim, fn [{^relay, :batched}] ->
               assert %{starts: 1, pids: pids} = Relay.stats()
               assert pids == before.pids + 1
               Process.exit(victim, :kill)
               eventually(fn -> Relay.stats() == before end)
               {:ok, run}
             end)

    assert Relay.stats() == before
    assert Relay.subscribers(topic) == []

    assert_raise RuntimeError, "boom", fn ->
      Relay.start_subscribed(topic, self(), fn _ -> raise "boom" end)
    end

    assert Relay.stats() == before
  end

  test "no forwarder processes: the relay links to nothing but its supervisor",
       %{topic: topic, relay: relay} do
    assert :ok = Relay.subscribe(topic <> ":sub:m", self())
    {:links, links} = Process.info(relay, :links)
    assert links == [Process.whereis(CouncilEx.AppSupervisor)]
    Relay.unsubscribe(topic <> ":sub:m", self())
  end

  test "the relay keeps its message queue off the heap (bursts from the C node)" do
    assert Process.info(Process.whereis(Relay), :message_queue_data) ==
             {:message_queue_data, :off_heap}
  end
end
