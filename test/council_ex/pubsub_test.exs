defmodule CouncilEx.PubSubTest do
  use ExUnit.Case, async: false
  @moduletag :cnode

  import CouncilEx.Test.Helpers
  alias CouncilEx.PubSub
  alias CouncilEx.PubSub.Relay
  alias CouncilEx.Test.{Backend, QuickCouncil, SlowCouncil}

  # the C node's counts, or the NIF's
  defp stats, do: {:ok, Backend.stats()}

  test "subscribe/1 by run id or topic; unsubscribe/1 stops delivery" do
    id = run_id()
    {:ok, pid} = CouncilEx.start(SlowCouncil, "q", run_id: id)
    assert :ok = PubSub.subscribe(id)
    assert :ok = PubSub.unsubscribe("council_ex:run:" <> id)
    assert :ok = PubSub.subscribe("council_ex:run:" <> id)
    CouncilEx.cancel(pid)
    assert_receive {:run_cancelled, ^id, %{}}, 15_000
    PubSub.unsubscribe(id)
  end

  @tag :cnode_only
  test "the relay subscribes once per topic however many local subscribers" do
    id = run_id()
    {:ok, pid} = CouncilEx.start(SlowCouncil, "q", run_id: id)
    {:ok, %{subscriptions: before}} = stats()
    parent = self()

    subs =
      for _ <- 1..5 do
        spawn_link(fn ->
          :ok = PubSub.subscribe(id)
          send(parent, :subscribed)
          receive do: ({:run_cancelled, ^id, _} -> send(parent, {:got, self()}))
        end)
      end

    for _ <- subs, do: assert_receive(:subscribed, 15_000)
    assert {:ok, %{subscriptions: after_}} = stats()
    assert after_ == before + 1
    CouncilEx.cancel(pid)
    for s <- subs, do: assert_receive({:got, ^s}, 15_000)
  end

  test "a subscriber that exits leaves the topic (the relay leaves the C node)" do
    id = run_id()
    {:ok, pid} = CouncilEx.start(SlowCouncil, "q", run_id: id)
    {:ok, %{subscriptions: before}} = stats()

    sub =
      spawn(fn ->
        PubSub.subscribe(id)
        receive do: (:stop -> :ok)
      end)

    eventually(fn -> Backend.subscribers("council_ex:run:" <> id) == [sub] end)
    expected = before + 1
    eventually(fn -> match?({:ok, %{subscriptions: ^expected}}, stats()) end)
    send(sub, :stop)
    eventually(fn -> Backend.subscribers("council_ex:run:" <> id) == [] end)
    eventually(fn -> match?({:ok, %{subscriptions: ^before}}, stats()) end)
    CouncilEx.cancel(pid)
  end

  test "a sub-council's events reach subscribers of its topic, through the relay alone" do
    id = run_id()
    sub_topic = "council_ex:run:" <> id <> ":sub:panel"
    relay = Process.whereis(Relay)
    assert is_pid(relay) or Backend.nif?()
    :ok = PubSub.subscribe(sub_topic)
    {:ok, _} = CouncilEx.start(CouncilEx.Test.ParentCouncil, "q", run_id: id, subscribe: true)
    events = collect_events(id)
    assert is_list(events), "no terminal event: #{inspect(events)}"
    assert {:run_completed, ^id, _} = List.last(events)

    # The panel member sits in two rounds: two nested runs on the one sub
    # topic, each with its own run id and round names as atoms, and the
    # subscription outlives the first.
    sub_events = receive_nested([], 2)
    sub_ids = sub_events |> Enum.map(&elem(&1, 1)) |> Enum.uniq()
    assert length(sub_ids) == 2
    refute id in sub_ids

    for sub_id <- sub_ids do
      mine = Enum.filter(sub_events, &(elem(&1, 1) == sub_id))
      assert [{:run_started, ^sub_id, _council, _input} | _] = mine
      assert {:round_started, sub_id, :independent_analysis, 0} in mine
      assert {:run_completed, ^sub_id, %{final: final}} = List.last(mine)
      assert is_binary(final)
      assert Enum.count(mine, &(elem(&1, 0) in [:run_completed, :run_failed, :run_cancelled])) == 1
    end

    # No helper process in between (with the NIF: no relay at all); the
    # parent's topic is gone, the sub topic stays until its subscriber
    # leaves.
    if relay, do: assert({:links, [_supervisor]} = Process.info(relay, :links))
    assert Backend.subscribers("council_ex:run:" <> id) == []
    assert Backend.subscribers(sub_topic) == [self()]
    :ok = PubSub.unsubscribe(sub_topic)
    assert Backend.subscribers(sub_topic) == []
  end

  test "relay bookkeeping is empty after 100 finished runs with subscribers; a topic can be subscribed again" do
    {:ok, %{subscriptions: remote_before}} = stats()
    relay_before = Backend.relay_stats()
    parent = self()

    ids =
      for i <- 1..100 do
        id = run_id("book")

        # every other run has a second subscriber of its own (subscribed
        # before the run exists)
        if rem(i, 2) == 0 do
          spawn_link(fn ->
            :ok = PubSub.subscribe(id)
            send(parent, {:subscribed, id})
            send(parent, {:done, id, collect_events(id)})
            receive do: (:never -> :ok)
          end)

          assert_receive {:subscribed, ^id}, 15_000
        end

        {:ok, _} = CouncilEx.start(QuickCouncil, i, run_id: id, subscribe: true)
        id
      end

    for id <- ids do
      assert is_list(collect_events(id)), "run #{id}: no terminal event"
    end

    for {id, i} <- Enum.with_index(ids, 1), rem(i, 2) == 0 do
      assert_receive {:done, ^id, events}, 30_000
      assert {:run_completed, ^id, _} = List.last(events)
    end

    # The subscribers are alive, but each topic ended with its run.
    assert Backend.relay_stats() == relay_before
    assert Enum.all?(ids, &(Backend.subscribers("council_ex:run:" <> &1) == []))
    eventually(fn -> match?({:ok, %{subscriptions: ^remote_before}}, stats()) end)

    # A topic whose run ended can be subscribed again: a run with a reused
    # id in another registry publishes on the same topic.
    id = hd(ids)
    assert :ok = PubSub.subscribe(id)

    {:ok, _} = CouncilEx.start(QuickCouncil, "again", run_id: id, registry: "CouncilEx.Test.Again")

    assert [{:run_started, ^id, QuickCouncil, "again"} | _] = collect_events(id)
    assert Backend.relay_stats() == relay_before
  end

  # The sub topic's events, until `runs` nested runs have ended (however
  # slowly: the C node drains each subscription's queue in turns, so they
  # may trail the parent's terminal event), then whatever else comes within
  # 500 ms (a third run would be seen).
  defp receive_nested(acc, 0), do: receive_all(acc)

  defp receive_nested(acc, runs) do
    receive do
      ev when is_tuple(ev) ->
        ended? = elem(ev, 0) in [:run_completed, :run_failed, :run_cancelled]
        receive_nested([ev | acc], if(ended?, do: runs - 1, else: runs))
    after
      30_000 -> Enum.reverse(acc)
    end
  end

  defp receive_all(acc) do
    receive do
      ev when is_tuple(ev) -> receive_all([ev | acc])
    after
      500 -> Enum.reverse(acc)
    end
  end
end
