defmodule CouncilEx.NifInlineTest do
  # The NIF's inline path (c_src/nif/council_nif.c): a NIF call that finds
  # the core free carries its request out on its own scheduler and steps
  # the core for a bounded time; the loop thread sleeps meanwhile, until
  # the loop's next timer. Not async: the loop thread must be left alone
  # (asleep) for the first test to mean anything.
  use ExUnit.Case, async: false
  @moduletag :nif_only

  alias CouncilEx.Nif
  import CouncilEx.Test.Helpers, only: [eventually: 1, run_events: 1, run_id: 1]

  @reg "CouncilEx.Runner.Registry"
  @slow ~s({"id":"slow","members":[{"id":"a","provider":"mock","options":{"latency_ms":600000}}],
            "rounds":[{"type":"independent_analysis"}],"limits":{"member_timeout_ms":3600000}})
  @brief ~s({"id":"brief","members":[{"id":"a","provider":"mock","options":{"latency_ms":50}}],
             "rounds":[{"type":"independent_analysis"}]})
  @times_out ~s({"id":"times_out","members":[{"id":"a","provider":"mock",
                 "options":{"latency_ms":600000}}],"rounds":[{"type":"independent_analysis"}],
                 "limits":{"member_timeout_ms":200,"max_attempts":1}})
  @council ~s({"id":"council","members":[{"id":"a","provider":"mock"},{"id":"b","provider":"mock"},
               {"id":"c","provider":"mock"}],"rounds":[{"type":"independent_analysis"},
               {"type":"peer_review"},{"type":"vote"}],"chair":"a"})
  # b answers at once, a after 40 ms: the start's NIF call drives the run
  # up to a's answer, the loop thread the rest
  @mixed ~s({"id":"mixed","members":[{"id":"a","provider":"mock","options":{"latency_ms":40,"chunks":3}},
             {"id":"b","provider":"mock","options":{"chunks":2}}],
             "rounds":[{"type":"independent_analysis"},{"type":"peer_review"}]})

  defp inlined do
    {:ok, n} = Nif.call(:inline)
    n
  end

  # Starts with opts; :inline when the start's own NIF call carried it out
  # (the count went up by the start and the count's own read on each
  # shard, all carried out by their calls), else :queued.
  defp start(opts) do
    n0 = inlined()
    {:ok, pid} = Nif.start(opts)
    {pid, if(inlined() == n0 + 1 + Nif.shards(), do: :inline, else: :queued)}
  end

  # an event without what differs between two runs of a spec (the run id,
  # durations, timestamps)
  defp shape({:run_started, _, council, input}), do: {:run_started, council, input}
  defp shape({:round_started, _, round, idx}), do: {:round_started, round, idx}
  defp shape({:member_started, _, round, m}), do: {:member_started, round, m}
  defp shape({:member_token, _, round, m, chunk}), do: {:member_token, round, m, chunk}

  defp shape({:member_completed, _, round, m, r}),
    do: {:member_completed, round, m, r.status, r.text}

  defp shape({:round_completed, _, round, r}), do: {:round_completed, round, r.text}
  defp shape({:run_completed, _, r}), do: {:run_completed, r.final}

  test "a timer armed inline while the loop thread sleeps on a later one fires, on the loop's clock" do
    # the loop thread's next timer is 10 minutes away
    {:ok, slow} = Nif.start(%{spec: @slow, input: "q"})
    # a run that the loop thread ends (its member's timer): the loop's
    # clock stands where it was then while the loop thread sleeps on
    bid = run_id("brief")
    {:ok, _} = Nif.start(%{spec: @brief, input: "q", run_id: bid, subscribe: [self()]})
    assert {:run_completed, ^bid, _} = List.last(run_events(bid))

    # three starts carried out by their NIF call (the first of them may
    # take longer than a NIF call steps: its spec is new; then the loop
    # thread is woken for the work left and sees the timer itself)
    hits =
      Enum.reduce_while(1..30, 0, fn _, hits ->
        # not for ordering: the loop's clock, not read since, falls 300 ms
        # behind, as it does while the loop thread sleeps on a long timer
        Process.sleep(300)
        # the loop thread carries the second request out and sleeps again
        # (on the slow run's timer), with nothing left for it to do
        :ok = Nif.call({:inline, false})
        :ok = Nif.call({:inline, true})
        id = run_id("timeout")
        {pid, how} = start(%{spec: @times_out, input: "q", run_id: id, subscribe: [self()]})
        evs = run_events(id)
        Process.exit(pid, :kill)

        # the member's timeout (200 ms), armed by the start's NIF call: it
        # fired (the loop thread was woken for it: it slept until the slow
        # run's timer), and not before its time (a timer armed on the clock
        # as it stood, 300 ms behind, fires at once). The loop's clock
        # counts whole milliseconds of a coarse clock: a few ms short of
        # the 200 are its own.
        assert [%{status: :timeout, duration_us: us}] =
                 for({:member_completed, _, _, "a", r} <- evs, do: r)

        assert us >= 150_000, "fired after #{us} us"
        hits = if how == :inline, do: hits + 1, else: hits
        if hits == 3, do: {:halt, hits}, else: {:cont, hits}
      end)

    assert hits == 3, "#{hits} of the starts were carried out by their NIF call"
    Process.exit(slow, :kill)
  end

  test "a subscriber gets every event in order when a run is driven partly inline, partly by the loop thread" do
    run = fn ->
      id = run_id("mixed")
      {_pid, how} = start(%{spec: @mixed, input: "q", run_id: id, subscribe: [self()]})
      {how, Enum.map(run_events(id), &shape/1)}
    end

    # a start carried out by its NIF call (the loop thread may hold the
    # core at that moment: then again)
    inline =
      Enum.find_value(1..20, fn _ -> with({:inline, evs} <- run.(), do: evs, else: (_ -> nil)) end)

    assert inline, "no start was carried out by its NIF call"

    :ok = Nif.call({:inline, false})

    queued =
      try do
        assert {:queued, evs} = run.()
        evs
      after
        Nif.call({:inline, true})
      end

    # the same events in the same order either way, a's tokens among them
    assert inline == queued
    assert {:run_completed, _} = List.last(inline)
    assert length(for {:member_token, _, "a", _} <- inline, do: 1) == 6
  end

  test "System.schedulers_online() * 100 processes start, await and read councils at once" do
    n = System.schedulers_online() * 100
    n0 = inlined()

    tasks =
      for i <- 1..n do
        Task.async(fn ->
          id = run_id("drive")
          {:ok, pid} = Nif.start(%{spec: @council, input: "q#{i}", run_id: id})

          outcome =
            try do
              GenServer.call(pid, :await, 30_000)
            catch
              # it ended before the call reached it
              :exit, {reason, _} when reason in [:noproc, :normal] ->
                Nif.call({:result, @reg, id})
            end

          {outcome, Nif.call({:state, @reg, id})}
        end)
      end

    for result <- Task.await_many(tasks, 60_000) do
      assert {{:ok, %{final: _}}, {:ok, %{status: :completed}}} = result
    end

    assert inlined() > n0
    eventually(fn -> match?({:ok, %{runs_alive: 0}}, Nif.call(:stats)) end)
  end

  # A run id of shard 0's (each shard has its own index).
  defp shard0_id(prefix) do
    id = run_id(prefix)
    if Nif.shard_of(id) == 0, do: id, else: shard0_id(prefix)
  end

  test "a start that would make the index of live runs rehash (4,096 buckets) is left to the loop thread" do
    eventually(fn -> match?({:ok, %{runs_alive: 0}}, Nif.call(:stats)) end)
    # shard 0's index has 4,096 buckets from 2,048 runs on, and grows at 4,096
    slow = fn -> %{spec: @slow, input: "q", run_id: shard0_id("grow")} end
    pids = for _ <- 1..4095, do: elem(Nif.start(slow.()), 1)
    assert {:ok, %{runs_alive: 4095}} = Nif.call(:stats)

    n0 = inlined()
    {:ok, pid} = Nif.start(slow.())

    try do
      # at most the count's reads went inline (one per shard), not the start
      assert inlined() - n0 <= Nif.shards()
      assert {:ok, %{status: :running}} = GenServer.call(pid, :state)
      # the index has grown: starts are carried out by their call again
      # (none of these pids is killed before all have started: a pid that
      # dies before its run ends wakes the loop thread, which may then
      # hold the lock as the next start comes)
      started = for _ <- 1..20, do: start(slow.())
      Enum.each(started, fn {p, _} -> Process.exit(p, :kill) end)
      assert Enum.any?(started, fn {_, how} -> how == :inline end)
    after
      Enum.each([pid | pids], &Process.exit(&1, :kill))
    end

    eventually(fn -> match?({:ok, %{runs_alive: 0}}, Nif.call(:stats)) end)
  end

  test "requests queued while the inline path is off are carried out in order by the loop thread" do
    :ok = Nif.call({:inline, false})

    try do
      n0 = inlined()
      id = run_id("queued")
      {:ok, pid} = Nif.start(%{spec: @council, input: "q", run_id: id, subscribe: [self()]})
      assert {:run_completed, ^id, %{final: _}} = List.last(run_events(id))
      assert {:ok, %{status: :completed}} = Nif.call({:state, @reg, id})
      ref = Process.monitor(pid)
      assert_receive {:DOWN, ^ref, :process, ^pid, reason} when reason in [:normal, :noproc]
      assert inlined() == n0
    after
      Nif.call({:inline, true})
    end
  end
end
