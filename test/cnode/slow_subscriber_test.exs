# A subscriber that stops reading (issue 10, item 7): its bounded queue
# overflows, it gets the overflow notice and then the run's terminal event,
# and nothing else is held up: other subscribers get every event, other
# runs complete, its connection stays up.
Code.require_file("support.exs", __DIR__)

defmodule CNode.SlowSubscriberTest do
  use ExUnit.Case, async: false
  import CNodeTest

  @terminal [:run_completed, :run_failed, :run_cancelled]

  setup_all do
    # 256 KiB of backlog per connection (default 8 MiB) so that a run of
    # about 1 MB overflows it; a core queue bound far above the run's size,
    # so that only the backlog cuts anyone off. --subscriber-queue 16 for
    # the core's own bound.
    backlog = start_node(args: ["--max-subscriber-backlog", "262144",
                                "--subscriber-queue", "100000"])
    queue = start_node(args: ["--subscriber-queue", "16"])
    on_exit(fn -> stop_node(backlog); stop_node(queue) end)
    {:ok, backlog: backlog, queue: queue}
  end

  defp svc(i), do: {:council_ex, i.node}

  # 4 members streaming `chunks` tokens each over `ms` (paced by the mock's
  # timers; 0 ms: every token at once).
  defp spec(chunks, ms) do
    %{id: "s",
      members: for(m <- 1..4, do: %{id: "m#{m}", provider: "mock",
                                   options: %{latency_ms: ms, chunks: chunks,
                                              text: String.duplicate("abcdefghij", chunks)}}),
      rounds: [%{type: "independent_analysis"}]}
  end

  defp start(i, id, spec, subs),
    do: GenServer.call(svc(i), {:start, %{input: "q", spec: spec, run_id: id, subscribe: subs}})

  # A call over the raw connection; frames that are not its reply (the
  # service's monitor of the raw pid, events) are returned too, in order.
  defp raw_call(s, me, request) do
    ref = make_ref()
    raw_send(s, {6, me, :"", :council_ex}, {:"$gen_call", {me, ref}, request})
    raw_reply(s, ref, [])
  end

  defp raw_reply(s, ref, seen) do
    case raw_recv(s, 60_000) do
      {_ctl, {^ref, reply}} -> {reply, Enum.reverse(seen)}
      {_ctl, msg} -> raw_reply(s, ref, [msg | seen])
    end
  end

  # Every message of the raw connection up to and including the terminal
  # event of run `id` (60 s per frame: after a long stop the kernel's
  # retransmission backoff, not the node, decides when bytes move again).
  defp raw_until_terminal(s, id, acc) do
    case raw_recv(s, 60_000) do
      {_ctl, ev} when is_tuple(ev) and elem(ev, 0) in @terminal and elem(ev, 1) == id ->
        Enum.reverse([ev | acc])
      {_ctl, msg} when is_tuple(msg) -> raw_until_terminal(s, id, [msg | acc])
      {_ctl, _} -> raw_until_terminal(s, id, acc)
      {:error, reason} -> flunk("raw connection: #{inspect(reason)} after #{length(acc)} messages")
    end
  end

  defp events_with_notices(topic, acc \\ []) do
    receive do
      {:council_ex_overflow, ^topic, _} = n -> events_with_notices(topic, [n | acc])
      e when is_tuple(e) and elem(e, 0) in @terminal -> Enum.reverse([e | acc])
      e when is_tuple(e) and tuple_size(e) >= 3 -> events_with_notices(topic, [e | acc])
    after
      60_000 -> flunk("no terminal event; got #{length(acc)} messages")
    end
  end

  test "a subscriber that stops reading is cut off with the notice, then gets the terminal event",
       %{backlog: i} do
    # A socket with the default receive buffer: with the report's 4 KiB one
    # the kernel drops segments it cannot hold, and after a pause of
    # seconds the drain goes at the pace of TCP's retransmission backoff
    # (half a minute here), which is the kernel's business, not the node's.
    {:ok, s, name} = raw_connect(i.port, cookie())
    slow = raw_pid(name, 1)
    id = "slow-#{System.unique_integer([:positive])}"
    topic = "council_ex:run:" <> id
    assert {:ok, _} = raw_call(s, slow, {:subscribe, topic, slow})
    base = stats(i.node).subscriptions

    # The raw client reads nothing until the run has ended. 8000 events of
    # about 120 bytes over 8 s: far more than the 256 KiB backlog plus what
    # the kernel holds (128 KiB unsent, a few KiB in flight), while a
    # subscriber that reads (this VM) may stall for about 3 s without
    # falling that far behind.
    assert {:ok, _} = start(i, id, spec(2000, 8000), [self()])
    mine = events_with_notices(topic)
    assert {:run_completed, ^id, _} = List.last(mine)
    refute Enum.any?(mine, &match?({:council_ex_overflow, _, _}, &1))
    assert length(mine) == 8000 + 12

    # Another run meanwhile, with the stalled subscriber still subscribed.
    other = "other-#{System.unique_integer([:positive])}"
    assert {:ok, _} = start(i, other, spec(10, 0), [self()])
    assert {:run_completed, ^other, _} = List.last(events())

    # Now the raw client drains: the events as they were sent, a prefix of
    # everything, then the notice, then nothing but the terminal event.
    got = raw_until_terminal(s, id, [])
    {before, [notice | rest]} = Enum.split_while(got, &(not match?({:council_ex_overflow, _, _}, &1)))
    assert {:council_ex_overflow, ^topic, dropped} = notice
    assert dropped >= 1
    assert before == Enum.take(mine, length(before))
    assert length(before) < length(mine) - 1
    assert [{:run_completed, ^id, _}] = rest

    # The connection is up and the subscription gone with the terminal event.
    assert {:pong, _} = raw_call(s, slow, :ping)
    assert wait_until(fn -> stats(i.node).subscriptions == base - 1 end)
    :gen_tcp.close(s)
  end

  test "past the core's queue bound: the notice, then the terminal event", %{queue: i} do
    id = "burst-#{System.unique_integer([:positive])}"
    topic = "council_ex:run:" <> id
    # every token published at once: far more than 16 wait for delivery
    assert {:ok, _} = start(i, id, spec(200, 0), [self()])
    got = events_with_notices(topic)
    {_before, [notice | rest]} =
      Enum.split_while(got, &(not match?({:council_ex_overflow, _, _}, &1)))
    assert {:council_ex_overflow, ^topic, dropped} = notice
    assert dropped >= 1
    assert [{:run_completed, ^id, %{final: final}}] = rest
    assert is_binary(final)
    assert wait_until(fn -> stats(i.node).subscriptions == 0 end)
  end
end
