defmodule CouncilEx.Test.NodeStop.Slow do
  @moduledoc "One mock member that takes ten minutes: a run that is still going when the node stops."
  use CouncilEx

  member :a, provider: :mock, latency_ms: 600_000
  round :independent_analysis
  limits member_timeout_ms: 900_000
end

defmodule CouncilEx.NodeStopTest do
  # The library-managed C node stopped under runs: cleanly (SIGTERM: runs
  # cancelled, then their processes exit with :shutdown) and not (kill -9).
  # run/3 must return, and subscribers must hear of the end either way.
  use ExUnit.Case, async: false
  @moduletag :cnode
  # the C node itself (its process, distribution, the relay)
  @moduletag :cnode_only

  import CouncilEx.Test.Helpers
  alias CouncilEx.PubSub.Relay
  alias CouncilEx.RunServer
  alias CouncilEx.Test.NodeStop.Slow
  alias CouncilEx.Test.QuickCouncil

  defp signal_node(sig) do
    os_pid = CouncilEx.Node.os_pid()
    assert is_integer(os_pid)
    {_, 0} = System.cmd("kill", ["-#{sig}", Integer.to_string(os_pid)])
    os_pid
  end

  # The node manager restarts the node (the ASan build on a loaded
  # machine: up to 60 s) under the same name, with another OS pid than
  # `old_os_pid`; a run on it completes.
  defp assert_restarted(old_os_pid) do
    new = wait_restarted(old_os_pid)
    assert GenServer.call({:council_ex, new}, :ping) == :pong
    assert {:ok, %{final: _}} = CouncilEx.run(QuickCouncil, "after the stop", timeout: 30_000)
    new
  end

  # run/3 of a Slow run in a task, once the run has begun its member call.
  defp run_in_task(id) do
    task = Task.async(fn -> CouncilEx.run(Slow, "q", run_id: id) end)
    pid = eventually(fn -> match?({:ok, _}, w = RunServer.whereis(id)) && elem(w, 1) end)
    # run/3's helper is subscribed (its start carried the subscription)
    eventually(fn -> Relay.subscribers("council_ex:run:" <> id) != [] end)
    {task, pid}
  end

  # A subscriber process that forwards what it receives to the test.
  defp forwarding_subscriber(topic) do
    test = self()

    pid =
      spawn(fn ->
        :ok = CouncilEx.PubSub.subscribe(topic)
        send(test, {:subscribed, self()})
        forward(test)
      end)

    on_exit(fn -> Process.exit(pid, :kill) end)
    assert_receive {:subscribed, ^pid}, 15_000
    pid
  end

  defp forward(test) do
    receive do
      m -> send(test, {:forwarded, self(), m}) && forward(test)
    end
  end

  defp restart_relay do
    relay = Process.whereis(Relay)
    ref = Process.monitor(relay)
    Process.exit(relay, :kill)
    assert_receive {:DOWN, ^ref, :process, ^relay, :killed}, 5_000
    eventually(fn -> (r = Process.whereis(Relay)) && r != relay end)
  end

  test "SIGTERM mid-run: run/3 returns the cancelled result, a subscriber gets run_cancelled" do
    id = run_id("sigterm")
    topic = "council_ex:run:" <> id
    {task, _pid} = run_in_task(id)
    sub = forwarding_subscriber(topic)

    old = signal_node("TERM")

    assert {:error, {:cancelled, %{final: nil}}} = Task.await(task, 15_000)
    assert_receive {:forwarded, ^sub, {:run_cancelled, ^id, %{}}}, 15_000
    assert_restarted(old)
    # the terminal event ended the subscription before the node went: no notice
    refute_received {:forwarded, ^sub, {:council_ex_down, _, _}}
    assert Relay.subscribers(topic) == []
  end

  test "kill -9 mid-run: every subscriber is told {:council_ex_down, topic, :noconnection} once" do
    Process.flag(:trap_exit, true)
    id = run_id("kill9")
    topic = "council_ex:run:" <> id
    # the test subscribes through its start, a second process through PubSub
    {:ok, pid} = CouncilEx.start_link(Slow, "q", run_id: id, subscribe: true)
    assert_receive {:member_started, ^id, _, "a"}, 15_000
    sub = forwarding_subscriber(topic)
    # a sub-council topic (no terminal event of its own) is told too
    sub_topic = topic <> ":sub:m"
    :ok = CouncilEx.PubSub.subscribe(sub_topic)
    {task, _} = run_in_task(run_id("kill9-run"))

    old = signal_node("KILL")

    assert_receive {:EXIT, ^pid, :noconnection}, 15_000
    assert_receive {:council_ex_down, ^topic, :noconnection}, 15_000
    assert_receive {:council_ex_down, ^sub_topic, :noconnection}, 15_000
    assert_receive {:forwarded, ^sub, {:council_ex_down, ^topic, :noconnection}}, 15_000
    assert Task.await(task, 15_000) == {:error, :noconnection}
    assert_restarted(old)
    # once each, and the subscriptions are gone
    refute_received {:council_ex_down, _, _}
    refute_received {:forwarded, ^sub, _}
    assert Relay.subscribers(topic) == []
    assert Relay.subscribers(sub_topic) == []
  end

  test "a start with subscribe: true answered just before the node goes down: the notice follows its events" do
    topic = "council_ex:run:" <> run_id("inflight")
    # a run pid of the node, as the start answers it
    {:ok, run} = CouncilEx.start(Slow, "q")
    relay = Process.whereis(Relay)
    node = node(run)
    :erlang.trace(relay, true, [:receive])

    result =
      try do
        Relay.start_subscribed(topic, self(), fn entries ->
          assert [{^relay, :batched}] = entries
          # the node is lost after it answered the start, before the
          # relay hears of the answer
          send(self(), {:old, signal_node("KILL")})
          assert_receive {:trace, ^relay, :receive, {:nodedown, ^node, _}}, 15_000
          :sys.get_state(relay)
          {:ok, run}
        end)
      after
        :erlang.trace(relay, false, [:receive])
      end

    assert result == {:ok, run}
    assert_received {:council_ex_down, ^topic, :noconnection}
    assert Relay.subscribers(topic) == []
    assert_received {:old, old}
    assert_restarted(old)
  end

  # A managed node comes back under its name: its nodedown may come while
  # a start is under way and the node be connected again when the start is
  # answered, with a run of the new instance or a pid of the lost one. The
  # relay is told of a loss here without a real one (the node stays up); a
  # run that has ended stands for a pid of the lost instance.
  defp start_seeing_nodedown(topic, run) do
    Relay.start_subscribed(topic, self(), fn entries ->
      assert [{relay, :batched}] = entries
      send(relay, {:nodedown, node(run), [node_type: :hidden]})
      :sys.get_state(relay)
      {:ok, run}
    end)
  end

  test "a start answered, after its node was lost and back, with a pid that is gone: the notice follows" do
    topic = "council_ex:run:" <> run_id("inflight-back")
    {:ok, gone} = CouncilEx.start(Slow, "q", run_id: run_id("inflight-gone"))
    ref = Process.monitor(gone)
    :ok = CouncilEx.cancel(gone)
    assert_receive {:DOWN, ^ref, :process, ^gone, _}

    assert start_seeing_nodedown(topic, gone) == {:ok, gone}
    assert_receive {:council_ex_down, ^topic, :noconnection}
    assert Relay.subscribers(topic) == []
  end

  test "a start answered, after its node was lost and back, with a live run of it: no notice" do
    id = run_id("inflight-new")
    topic = "council_ex:run:" <> id

    result =
      Relay.start_subscribed(topic, self(), fn entries ->
        {:ok, run} =
          CouncilEx.RunServer.start(
            run_id: id,
            council: Slow,
            spec: Slow.__council__(),
            input: "q",
            subscribe: entries
          )

        relay = Process.whereis(Relay)
        send(relay, {:nodedown, node(run), [node_type: :hidden]})
        :sys.get_state(relay)
        {:ok, run}
      end)

    assert {:ok, run} = result
    # the relay's monitor of the run has its answer (none: it lives)
    :sys.get_state(Relay)
    :ok = CouncilEx.cancel(run)
    # its events still come, to the end: the subscription was kept
    assert_receive {:run_cancelled, ^id, _}
    refute_received {:council_ex_down, ^topic, _}
  end

  test "run/3 returns when its run's exit comes and its terminal event cannot (relay restarted)" do
    id = run_id("norelay")
    {task, pid} = run_in_task(id)
    # the relay's subscriptions (run/3's helper's among them) go with it
    restart_relay()

    :ok = GenServer.stop(pid, :bye)

    # the outcome comes from the C node, which retains it
    assert {:error, {:cancelled, %{final: nil}}} = Task.await(task, 15_000)
  end

  test "run/3 gives {:error, {:exit, :shutdown}} when the node stops and the event cannot come" do
    id = run_id("norelay-term")
    {task, _pid} = run_in_task(id)
    restart_relay()

    old = signal_node("TERM")

    assert {:error, {:exit, :shutdown}} = Task.await(task, 15_000)
    assert_restarted(old)
  end
end
