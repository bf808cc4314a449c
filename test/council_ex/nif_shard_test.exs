defmodule CouncilEx.NifShardTest do
  # The NIF's shards (c_src/nif/nif.h, "shards"): several core contexts
  # (four per scheduler by default; scripts/run-beam-tests asks for 3,
  # whatever the machine has), a run living in the shard its run id names. What a caller sees
  # must not depend on which shard a run is in: these tests spread runs
  # over every shard and check the requests that find a run by id, the
  # topics, the counts and max_runs, which holds for all shards at once.
  use ExUnit.Case, async: false
  @moduletag :nif_only

  alias CouncilEx.Nif
  import CouncilEx.Test.Helpers, only: [eventually: 1, run_events: 1, run_id: 1]

  @reg "CouncilEx.Runner.Registry"
  @quick ~s({"id":"quick","members":[{"id":"a","provider":"mock"},{"id":"b","provider":"mock"}],
             "rounds":[{"type":"independent_analysis"},{"type":"vote"}]})
  @slow ~s({"id":"slow","members":[{"id":"a","provider":"mock","options":{"latency_ms":600000}}],
            "rounds":[{"type":"independent_analysis"}],"limits":{"member_timeout_ms":3600000}})
  @nested ~s({"id":"outer","members":[{"id":"inner","provider":"council","options":{"spec":
              {"id":"in","members":[{"id":"x","provider":"mock","options":{"latency_ms":600000}}],
               "rounds":[{"type":"independent_analysis"}],"limits":{"member_timeout_ms":3600000}}}}],
              "rounds":[{"type":"independent_analysis"}],"limits":{"member_timeout_ms":3600000}})

  # A run id of shard k's.
  defp id_of(k, prefix) do
    id = run_id(prefix)
    if Nif.shard_of(id) == k, do: id, else: id_of(k, prefix)
  end

  defp shards, do: 0..(Nif.shards() - 1)

  test "the NIF has the shards asked for, each with its own loop thread" do
    n = Nif.shards()
    assert n >= 1

    if want = System.get_env("COUNCIL_NIF_SHARDS"),
      do: assert(n == String.to_integer(want))

    threads =
      Path.wildcard("/proc/self/task/*/comm")
      |> Enum.count(&(File.read!(&1) == "council_loop\n"))

    assert threads == n
  end

  test "a run id's key is the id up to a first \":sub:\", so a sub-council topic is its parent's" do
    for _ <- 1..50 do
      id = run_id("key")
      assert Nif.shard_of(id <> ":sub:inner") == Nif.shard_of(id)
      assert Nif.shard_of(id <> ":sub:a:sub:b") == Nif.shard_of(id)
    end
  end

  test "run ids spread evenly over the shards, generated or made by callers" do
    n = Nif.shards()

    for ids <- [
          for(i <- 1..8000, do: "run-#{i}"),
          for(_ <- 1..8000, do: Base.url_encode64(:crypto.strong_rand_bytes(16), padding: false))
        ] do
      counts = Enum.frequencies_by(ids, &Nif.shard_of/1)
      assert Map.keys(counts) |> Enum.sort() == Enum.to_list(0..(n - 1))
      # each shard within a third of its share
      for {_, c} <- counts, do: assert(abs(c - 8000 / n) < 8000 / n / 3)
    end
  end

  test "runs on every shard answer by id, by pid and on their topics alike" do
    for k <- shards() do
      id = id_of(k, "everywhere")
      # subscribed before the run exists: the topic is the run's shard's
      :ok = Nif.call({:subscribe, "council_ex:run:" <> id, self()})
      {:ok, pid} = Nif.start(%{spec: @quick, input: "q#{k}", run_id: id})
      events = run_events(id)
      input = "q#{k}"
      assert {:run_started, ^id, "quick", ^input} = hd(events)
      assert {:run_completed, ^id, %{final: _}} = List.last(events)
      assert {:ok, %{final: _}} = Nif.call({:result, @reg, id})
      assert {:ok, %{status: :completed, run_id: ^id}} = Nif.call({:state, @reg, id})
      assert {:error, :unknown_run} = Nif.call({:whereis, @reg, id})
      # taken while retained (the start goes to the id's shard)
      assert {:error, :run_id_retained} = Nif.start(%{spec: @quick, input: "q", run_id: id})
      ref = Process.monitor(pid)
      assert_receive {:DOWN, ^ref, :process, ^pid, reason} when reason in [:normal, :noproc]
    end
  end

  test "a live run on any shard is found by whereis, state and its pid, and refuses its id" do
    runs =
      for k <- shards() do
        id = id_of(k, "live")
        {:ok, pid} = Nif.start(%{spec: @slow, input: "q", run_id: id})
        {id, pid}
      end

    try do
      for {id, pid} <- runs do
        assert {:ok, ^pid} = Nif.call({:whereis, @reg, id})
        assert {:ok, %{status: :running}} = Nif.call({:state, @reg, id})
        assert {:ok, %{status: :running}} = GenServer.call(pid, :state)
        assert ^id = GenServer.call(pid, :run_id)

        assert {:error, {:already_started, ^pid}} =
                 Nif.start(%{spec: @slow, input: "q", run_id: id, subscribe: [self()]})
      end

      assert {:ok, %{runs_alive: alive}} = Nif.call(:stats)
      assert alive >= length(runs)
      for {id, _} <- runs, do: assert(:ok = Nif.call({:cancel, @reg, id}))

      for {id, pid} <- runs do
        ref = Process.monitor(pid)
        assert_receive {:DOWN, ^ref, :process, ^pid, reason}
        assert reason in [{:shutdown, :cancelled}, :noproc]
        assert {:ok, %{status: :cancelled}} = Nif.call({:state, @reg, id})
      end
    after
      for {_, pid} <- runs, do: Process.exit(pid, :kill)
    end
  end

  test "runs started without an id get one of the shard that took them, and spread" do
    shards =
      for _ <- 1..(4 * Nif.shards()) do
        {:ok, pid} = Nif.start(%{spec: @slow, input: "q"})
        id = GenServer.call(pid, :run_id)
        assert byte_size(id) > 0
        assert {:ok, ^pid} = Nif.call({:whereis, @reg, id})
        assert {:ok, %{status: :running}} = Nif.call({:state, @reg, id})
        ref = Process.monitor(pid)
        Process.exit(pid, :kill)
        assert_receive {:DOWN, ^ref, :process, ^pid, :killed}
        Nif.shard_of(id)
      end

    # one caller's starts go round its scheduler's shards, not to one
    if Nif.shards() > System.schedulers_online(),
      do: assert(length(Enum.uniq(shards)) > 1)
  end

  test "sub-council topics follow their parent's shard" do
    for k <- shards() do
      id = id_of(k, "parent")
      topic = "council_ex:run:#{id}:sub:inner"
      assert :ok = Nif.call({:subscribe, topic, self()})
      assert Nif.call({:subscribers, topic}) == [self()]

      spec = ~s({"id":"outer","members":[{"id":"inner","provider":"council","options":{"spec":
        {"id":"in","members":[{"id":"x","provider":"mock"}],"rounds":[{"type":"independent_analysis"}]}}}],
        "rounds":[{"type":"independent_analysis"}]})

      {:ok, _pid} = Nif.start(%{spec: spec, input: "q", run_id: id})
      # the nested run's events (its own id), on the parent's topic + ":sub:inner"
      assert_receive {:run_completed, sub, _}, 10_000
      assert sub != id
      assert :ok = Nif.call({:unsubscribe, topic, self()})
      assert Nif.call({:subscribers, topic}) == []
    end
  end

  test "stats count every shard's runs and subscriptions" do
    eventually(fn -> match?({:ok, %{runs_alive: 0}}, Nif.call(:stats)) end)
    {:ok, %{subscriptions: subs0}} = Nif.call(:stats)

    runs =
      for k <- shards() do
        id = id_of(k, "counted")
        {:ok, pid} = Nif.start(%{spec: @slow, input: "q", run_id: id, subscribe: [self()]})
        pid
      end

    n = length(runs)
    assert {:ok, %{runs_alive: ^n, subscriptions: subs}} = Nif.call(:stats)
    assert subs == subs0 + n
    Enum.each(runs, &Process.exit(&1, :kill))
    eventually(fn -> match?({:ok, %{runs_alive: 0}}, Nif.call(:stats)) end)
  end

  test "max_runs holds for all the shards together" do
    Application.put_env(:council_ex, :nif_limits, max_runs: 3)

    try do
      :ok = Application.stop(:council_ex)
      {:ok, _} = Application.ensure_all_started(:council_ex)
      # three running runs, spread over the shards
      pids =
        for i <- 0..2 do
          id = id_of(rem(i, Nif.shards()), "max")
          {:ok, pid} = Nif.start(%{spec: @slow, input: "q", run_id: id})
          pid
        end

      # a fourth is refused whatever its shard, with or without an id
      for k <- shards(),
          do:
            assert(
              {:error, :limit} = Nif.start(%{spec: @slow, input: "q", run_id: id_of(k, "over")})
            )

      assert {:error, :limit} = Nif.start(%{spec: @slow, input: "q"})
      # one ends: room for one more
      [first | rest] = pids
      ref = Process.monitor(first)
      Process.exit(first, :kill)
      assert_receive {:DOWN, ^ref, :process, ^first, :killed}
      eventually(fn -> match?({:ok, %{runs_alive: 2}}, Nif.call(:stats)) end)
      assert {:ok, last} = Nif.start(%{spec: @slow, input: "q"})
      assert {:error, :limit} = Nif.start(%{spec: @slow, input: "q"})
      Enum.each([last | rest], &Process.exit(&1, :kill))
      eventually(fn -> match?({:ok, %{runs_alive: 0}}, Nif.call(:stats)) end)
      # a sub-council's run counts: a parent whose member is a slow
      # sub-council holds two of the three once the sub-council has begun
      eventually(fn -> match?({:ok, %{runs_alive: 0}}, Nif.call(:stats)) end)
      pid_id = id_of(0, "nested")
      :ok = Nif.call({:subscribe, "council_ex:run:#{pid_id}:sub:inner", self()})
      {:ok, parent} = Nif.start(%{spec: @nested, input: "q", run_id: pid_id})
      assert_receive {:run_started, _sub, "in", _}, 5_000
      # a start refused below the limit (its id taken) takes no slot
      assert {:error, {:already_started, ^parent}} =
               Nif.start(%{spec: @slow, input: "q", run_id: pid_id})

      {:ok, one} = Nif.start(%{spec: @slow, input: "q"})
      assert {:error, :limit} = Nif.start(%{spec: @slow, input: "q"})
      Enum.each([parent, one], &Process.exit(&1, :kill))
      eventually(fn -> match?({:ok, %{runs_alive: 0}}, Nif.call(:stats)) end)
      :ok = Nif.call({:unsubscribe, "council_ex:run:#{pid_id}:sub:inner", self()})
      # a run that completes leaves room too
      for _ <- 1..5 do
        id = run_id("done")
        {:ok, _} = Nif.start(%{spec: @quick, input: "q", run_id: id, subscribe: [self()]})
        assert {:run_completed, ^id, _} = List.last(run_events(id))
      end
    after
      Application.delete_env(:council_ex, :nif_limits)
      :ok = Application.stop(:council_ex)
      {:ok, _} = Application.ensure_all_started(:council_ex)
    end
  end
end
