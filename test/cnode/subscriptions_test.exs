# Subscription bookkeeping of the C node under its limits: a start whose
# `:subscribe` list cannot be honoured in full subscribes nobody new, and
# leaves subscriptions made before it alone.
Code.require_file("support.exs", __DIR__)

defmodule CNode.SubscriptionsTest do
  use ExUnit.Case, async: false
  import CNodeTest

  setup_all do
    info = start_node(args: ["--max-subscriptions", "3"])
    per_topic = start_node(args: ["--max-subscribers-per-topic", "2"])
    on_exit(fn -> stop_node(info); stop_node(per_topic) end)
    {:ok, info: info, per_topic: per_topic}
  end

  @spec_map %{id: "s", members: [%{id: "a", provider: "mock"}],
              rounds: [%{type: "independent_analysis"}]}

  defp svc(i), do: {:council_ex, i.node}

  defp start(i, opts),
    do: GenServer.call(svc(i), {:start, Map.merge(%{input: "q", spec: @spec_map}, opts)})

  defp idle_pid, do: spawn(fn -> receive do: (:stop -> :ok) end)

  test "a start that the subscription limit refuses leaves no run and no subscription", %{info: i} do
    base = stats(i.node).subscriptions
    run_id = "limit-#{System.unique_integer([:positive])}"
    topic = "council_ex:run:" <> run_id
    [a, b, c, d] = for _ <- 1..4, do: idle_pid()
    # a is subscribed before the start: the table (max 3) has room for two more
    assert GenServer.call(svc(i), {:subscribe, topic, a, :tagged}) == :ok
    assert start(i, %{run_id: run_id, subscribe: [a, b, c, d]}) == {:error, :limit}
    assert stats(i.node).subscriptions == base + 1
    # no run was made: the id is free, and a got nothing
    assert GenServer.call(svc(i), {:state, "CouncilEx.Runner.Registry", run_id}) ==
             {:error, :not_found}
    # a's subscription stays; b and c fit, duplicates and a count once
    assert {:ok, _} = start(i, %{run_id: run_id, subscribe: [a, b, b, c, a], input: "go"})
    for p <- [b, c], do: send(p, :stop)
    assert wait_until(fn -> stats(i.node).subscriptions == base end)
    send(a, :stop)
  end

  test "the limit counts subscriptions only once per (topic, pid)", %{info: i} do
    base = stats(i.node).subscriptions
    me = self()
    assert {:ok, _} = start(i, %{subscribe: [me, me, me, me, me]})
    assert {:run_completed, _, %{final: _}} = List.last(events())
    assert wait_until(fn -> stats(i.node).subscriptions == base end)
    assert {:error, :limit} = start(i, %{subscribe: [me, idle_pid(), idle_pid(), idle_pid()]})
    assert stats(i.node).subscriptions == base
  end

  test "within the limit every listed subscriber gets the run's events", %{info: i} do
    base = stats(i.node).subscriptions
    assert {:ok, _pid} = start(i, %{subscribe: [self(), {self(), :tagged}]})
    # the plain and the tagged subscription are one (topic, pid) pair: the
    # first entry wins, so events come plain
    assert {:run_completed, _, %{final: _}} = List.last(events())
    assert wait_until(fn -> stats(i.node).subscriptions == base end)
  end

  test "the per-topic limit refuses the start the same way: no run, no event to others",
       %{per_topic: i} do
    run_id = "topic-#{System.unique_integer([:positive])}"
    topic = "council_ex:run:" <> run_id
    me = self()
    # two subscribers fill the topic (max 2); each forwards its first event
    watchers = for k <- 1..2 do
      w = spawn(fn -> receive do: (ev -> send(me, {:leaked, k, ev})) end)
      assert GenServer.call(svc(i), {:subscribe, topic, w}) == :ok
      w
    end
    assert start(i, %{run_id: run_id, subscribe: [self()]}) == {:error, :limit}
    assert GenServer.call(svc(i), {:state, "CouncilEx.Runner.Registry", run_id}) ==
             {:error, :not_found}
    # the id is free: a start without subscribers takes it, and the two
    # subscribed first see that run, not a cancelled one before it
    assert {:ok, _} = start(i, %{run_id: run_id})
    assert_receive {:leaked, _, {:run_started, ^run_id, "s", _}}, 10_000
    assert_receive {:leaked, _, {:run_started, ^run_id, "s", _}}, 10_000
    refute_received {:leaked, _, {:run_cancelled, _, _}}
    for w <- watchers, do: Process.exit(w, :kill)
  end
end
