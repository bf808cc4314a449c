defmodule CouncilEx.NifLifecycleTest do
  # The NIF backend's life in the VM: the application's stop cancels runs
  # as the C node's SIGTERM does, the context takes the configuration when
  # the application starts, a code upgrade keeps the core running (also
  # while processes drive it from their schedulers) and an unload stops it
  # cleanly; terms the NIF cannot take are refused, never a
  # crash; 100,000 runs leave the memory where it was.
  use ExUnit.Case, async: false
  @moduletag :nif_only

  import CouncilEx.Test.Helpers
  alias CouncilEx.{Nif, RunIndex, RunServer}
  alias CouncilEx.Test.{Backend, QuickCouncil, SlowCouncil}

  @reg "CouncilEx.Runner.Registry"

  defp restart_app do
    :ok = Application.stop(:council_ex)
    {:ok, _} = Application.ensure_all_started(:council_ex)
  end

  # A process that subscribes to the run, monitors its pid and reports
  # what it gets, in order.
  defp watcher(id, pid) do
    parent = self()

    spawn_link(fn ->
      ref = Process.monitor(pid)
      :ok = GenServer.call(pid, {:subscribe, self()})
      send(parent, {:watching, self()})
      send(parent, {:watched, id, watch(ref, [])})
    end)
  end

  defp watch(ref, acc) do
    receive do
      {:DOWN, ^ref, :process, _, reason} -> Enum.reverse([{:down, reason} | acc])
      {:run_cancelled, _, _} -> watch(ref, [:run_cancelled | acc])
      _ -> watch(ref, acc)
    end
  end

  test "the application's stop cancels runs in flight: events, then answers, then :shutdown" do
    runs =
      for _ <- 1..20 do
        id = run_id("stop")
        {:ok, pid} = CouncilEx.start(SlowCouncil, "q", run_id: id)
        w = watcher(id, pid)
        assert_receive {:watching, ^w}
        awaiter = Task.async(fn -> CouncilEx.await(pid) end)
        wait_calling(awaiter.pid)
        {id, pid, awaiter}
      end

    :ok = Application.stop(:council_ex)

    for {id, _pid, awaiter} <- runs do
      assert {:error, {:cancelled, %{rounds: []}}} = Task.await(awaiter, 15_000)
      assert_receive {:watched, ^id, [:run_cancelled, {:down, :shutdown}]}, 15_000
    end

    # no context while the application is down, as no C node
    assert {:error, :unavailable} = Nif.call({:state, @reg, "x"})
    assert {:error, :unavailable} = CouncilEx.start(QuickCouncil, "q")
    {:ok, _} = Application.ensure_all_started(:council_ex)
    assert {:ok, %{final: _}} = CouncilEx.run(QuickCouncil, "after")
  end

  test "the context takes :run_retention_ms when the application starts; RunIndex agrees" do
    Application.put_env(:council_ex, :run_retention_ms, 1_000)

    try do
      restart_app()
      id = run_id("retain")
      {:ok, pid} = CouncilEx.start(QuickCouncil, "q", run_id: id)
      assert {:ok, result} = CouncilEx.await(pid, 30_000)
      assert {:ok, ^result} = CouncilEx.await(id)
      eventually(fn -> RunServer.state(id) == {:error, :not_found} end, 200, 50)
      eventually(fn -> RunIndex.lookup(pid) == :error end, 200, 50)
    after
      Application.delete_env(:council_ex, :run_retention_ms)
      restart_app()
    end
  end

  # Everything a subscriber got for run id, up to its terminal event.
  defp received(id, acc \\ []) do
    receive do
      {t, ^id, _} = e when t in [:run_completed, :run_cancelled] -> Enum.reverse([e | acc])
      {:run_failed, ^id, _, _} = e -> Enum.reverse([e | acc])
      {:council_ex_overflow, _, _} = e -> received(id, [e | acc])
      e when is_tuple(e) and tuple_size(e) >= 3 and elem(e, 1) == id -> received(id, [e | acc])
    after
      10_000 -> flunk("no terminal event: #{inspect(Enum.reverse(acc))}")
    end
  end

  test "a subscriber past the core's queue bound gets the notice, then its run's terminal event" do
    Application.put_env(:council_ex, :nif_limits, subscriber_queue_cap: 8)

    try do
      restart_app()
      id = run_id("overflow")
      spec = ~s({"id":"many","members":[{"id":"a","provider":"mock","options":{"chunks":400}}],
                 "rounds":[{"type":"independent_analysis"}]})

      for mode <- [:plain, :lib] do
        id = "#{id}-#{mode}"
        sub = if mode == :plain, do: self(), else: {self(), :lib}
        {:ok, _} = Nif.start(%{spec: spec, input: "q", run_id: id, subscribe: [sub]})
        got = received(id)
        topic = "council_ex:run:" <> id

        {before, [{:council_ex_overflow, ^topic, n} | rest]} =
          Enum.split_while(got, &(not match?({:council_ex_overflow, _, _}, &1)))

        assert n > 0
        assert [{:run_completed, ^id, %{final: _}}] = rest
        assert length(before) < 400
      end

      assert Nif.call(:stats) |> elem(1) |> Map.fetch!(:subscriptions) == 0
    after
      Application.delete_env(:council_ex, :nif_limits)
      restart_app()
    end
  end

  @slow ~s({"id":"slow","members":[{"id":"a","provider":"mock","options":{"latency_ms":600000}}],
            "rounds":[{"type":"independent_analysis"}]})

  test "a code upgrade hands the running core to the new module; purging the old keeps it" do
    id = run_id("upgrade")
    {:ok, pid} = Nif.start(%{spec: @slow, input: "q", run_id: id, subscribe: [{self(), :lib}]})
    assert_receive {:run_started, ^id, _, _}
    {mod, bin, file} = :code.get_object_code(Nif)
    # the new version's on_load loads the library again: upgrade()
    {:module, Nif} = :code.load_binary(mod, file, bin)
    assert Nif.loaded?()
    assert :code.soft_purge(Nif)
    # the loop still serves the run and new ones
    assert {:ok, %{status: :running}} = RunServer.state(pid)
    assert {:ok, %{final: _}} = CouncilEx.run(QuickCouncil, "q")
    :ok = CouncilEx.cancel(pid)
    assert_receive {:run_cancelled, ^id, _}
  end

  # Processes that drive the core from their schedulers (the NIF calls
  # carry their requests out there while the core is free) through an
  # upgrade and a purge of the old code, which kills those that are in it:
  # the old instance's unload comes while the others drive on.
  test "a code upgrade and a purge while processes drive the core from their schedulers" do
    parent = self()
    spec = ~s({"id":"drive","members":[{"id":"a","provider":"mock"},{"id":"b","provider":"mock"}],
               "rounds":[{"type":"independent_analysis"},{"type":"vote"}]})

    drive = fn drive, i ->
      id = run_id("drive")
      {:ok, pid} = Nif.start(%{spec: spec, input: "q#{i}", run_id: id})
      {:ok, _} = Nif.call({:state, @reg, id})

      {:ok, %{final: _}} =
        try do
          GenServer.call(pid, :await)
        catch
          :exit, {reason, _} when reason in [:noproc, :normal] -> Nif.call({:result, @reg, id})
        end

      :pong = Nif.call(:ping)
      send(parent, {:drove, self()})
      drive.(drive, i + 1)
    end

    drivers = for _ <- 1..(System.schedulers_online() * 4), do: spawn(fn -> drive.(drive, 0) end)
    # one more waits outside the library's code through the purge, so
    # that one at least drives on the new code whatever the purge kills
    late = spawn(fn -> receive(do: (:go -> drive.(drive, 0))) end)
    refs = Map.new([late | drivers], &{Process.monitor(&1), &1})
    for d <- drivers, do: assert_receive({:drove, ^d}, 10_000)

    {mod, bin, file} = :code.get_object_code(Nif)
    {:module, Nif} = :code.load_binary(mod, file, bin)
    # the old code goes, with the drivers that are in it
    :code.purge(Nif)
    flush_drove()
    send(late, :go)
    alive = [late | Enum.filter(drivers, &Process.alive?/1)]
    # the others go on, on the new code
    for d <- alive, do: assert_receive({:drove, ^d}, 10_000)
    assert loop_threads() == Nif.shards()

    for {ref, d} <- refs do
      Process.exit(d, :kill)
      assert_receive {:DOWN, ^ref, :process, ^d, reason} when reason in [:killed, :noproc]
    end

    assert {:ok, %{final: _}} = CouncilEx.run(QuickCouncil, "q")
    eventually(fn -> match?({:ok, %{runs_alive: 0}}, Nif.call(:stats)) end)
  end

  defp flush_drove do
    receive do
      {:drove, _} -> flush_drove()
    after
      0 -> :ok
    end
  end

  # ERTS calls a NIF library's unload once its module is purged and no
  # object of its resource types is left (run pids hold one each): after
  # the application's stop, at once.
  test "unloading the library (the module purged after the application's stop) ends its thread" do
    assert loop_threads() == Nif.shards()
    :ok = Application.stop(:council_ex)
    true = :code.delete(Nif)
    assert :code.soft_purge(Nif)
    eventually(fn -> loop_threads() == 0 end)
    # loaded again: a new loop, and no context until the application opens it
    {:module, Nif} = Code.ensure_loaded(Nif)
    assert loop_threads() == Nif.shards()
    assert {:error, :unavailable} = Nif.call(:stats)
    {:ok, _} = Application.ensure_all_started(:council_ex)
    assert {:ok, %{final: _}} = CouncilEx.run(QuickCouncil, "again")
  end

  defp loop_threads do
    Path.wildcard("/proc/self/task/*/comm")
    |> Enum.count(&(File.read!(&1) == "council_loop\n"))
  end

  test "terms the NIF cannot take are refused with an error, never a crash" do
    remote = :erlang.binary_to_term(<<131, 88, 100, 0, 8, "x@remote"::binary, 1::32, 2::32, 3::32>>)
    assert node(remote) == :x@remote
    assert_raise ArgumentError, fn -> Nif.run_call(make_ref(), nil, :state) end
    assert_raise ArgumentError, fn -> Nif.run_id(:not_a_run) end
    assert {:error, :badarg} = Nif.call({:subscribe, "t", remote})

    assert {:error, {:bad_option, :subscribe}} =
             Nif.start(%{spec: "{}", input: "q", subscribe: [remote]})

    assert {:error, {:bad_option, :member_server}} =
             Nif.start(%{spec: "{}", input: "q", member_server: remote})

    assert {:error, {:bad_option, :subscribe}} =
             Nif.start(%{spec: "{}", input: "q", subscribe: Enum.map(1..65, fn _ -> self() end)})

    assert {:error, {:bad_option, :registry}} = Nif.start(%{spec: "{}", input: "q", registry: 1})
    assert {:error, :badarg} = Nif.call({:start, :not_a_map, self()})
    assert {:error, :badarg} = Nif.call({:start, %{}, :not_a_pid})
    assert {:error, :badarg} = Nif.call({:whereis, "r", :not_a_binary})
    assert {:error, :badarg} = Nif.call({:setenv, [{"A=B", "x"}]})
    assert {:error, :badarg} = Nif.call({:setenv, [{"A", "x" <> <<0>>}]})
    assert {:error, :badarg} = Nif.call({:setenv, :not_a_list})
    assert {:error, {:invalid_spec, "spec", _}} = Nif.start(%{spec: %{bad: {:tuple}}, input: "q"})

    assert {:error, {:invalid_spec, "spec", _}} = Nif.start(%{spec: [1 | 2], input: "q"})
    # names made of user data stay binaries: no atom is created (a first
    # run loads whatever code the second needs)
    run = fn ->
      n = System.unique_integer([:positive])

      spec = ~s({"id":"atoms","members":[{"id":"m_#{n}","provider":"mock"}],
                 "rounds":[{"type":"independent_analysis","name":"r_#{n}"}]})

      {:ok, _} =
        Nif.start(%{
          spec: spec,
          input: "q",
          council: "Elixir.NoSuch#{n}",
          subscribe: [{self(), :lib}]
        })

      assert_receive {:run_completed, _, %{rounds: [%{name: "r_" <> _}]}}
    end

    run.()
    atoms = :erlang.system_info(:atom_count)
    run.()
    assert :erlang.system_info(:atom_count) == atoms
    assert Nif.call(:ping) == :pong
  end

  @tag timeout: 600_000
  test "100,000 runs: memory back near its idle size afterwards" do
    Application.put_env(:council_ex, :run_retention_ms, 500)

    try do
      restart_app()
      spec = ~s({"id":"soak","members":[{"id":"a","provider":"mock","options":{"chunks":2}},
                 {"id":"b","provider":"mock"}],"rounds":[{"type":"independent_analysis"}]})

      soak = fn n ->
        1..n
        |> Task.async_stream(
          fn i ->
            {:ok, pid} = Nif.start(%{spec: spec, input: i, subscribe: [self()]})
            ref = Process.monitor(pid)

            receive do
              {:run_completed, _, _} -> :ok
            end

            receive do
              {:DOWN, ^ref, :process, ^pid, _} -> :ok
            end
          end,
          max_concurrency: 64,
          ordered: false,
          timeout: 60_000
        )
        |> Stream.run()
      end

      settle = fn ->
        # past the retention: the core has let every run go
        eventually(fn -> Backend.stats().runs == 0 end, 400, 50)
        :erlang.garbage_collect()
        Process.sleep(200)
        {vm_memory(), rss_kb()}
      end

      soak.(2_000)
      {vm0, rss0} = settle.()
      # under ASan (no :erlang.memory, see below) a fifth of them: the same
      # paths, at a tenth of the speed
      n = if vm0, do: 100_000, else: 20_000
      t0 = System.monotonic_time(:millisecond)
      soak.(n)
      ms = System.monotonic_time(:millisecond) - t0
      {vm1, rss1} = settle.()

      IO.puts(
        "\n  soak: #{n} runs in #{ms} ms; VM memory #{kib(vm0)} -> #{kib(vm1)} KiB, " <>
          "RSS #{rss0} -> #{rss1} KiB"
      )

      assert Backend.stats().runs_alive == 0 and Backend.stats().subscriptions == 0

      # Under ASan (scripts/run-beam-tests) ERTS's allocators are off
      # (no :erlang.memory) and freed memory sits in ASan's quarantine: the
      # runs are checked by ASan and LeakSanitizer instead.
      if vm0 do
        assert vm1 - vm0 < 8 * 1024 * 1024
        assert rss1 - rss0 < 32 * 1024
      end
    after
      Application.delete_env(:council_ex, :run_retention_ms)
      restart_app()
    end
  end

  defp kib(nil), do: "?"
  defp kib(bytes), do: div(bytes, 1024)

  defp vm_memory do
    :erlang.memory(:total)
  rescue
    ErlangError -> nil
  end

  defp rss_kb do
    [line] =
      "/proc/self/status"
      |> File.read!()
      |> String.split("\n")
      |> Enum.filter(&String.starts_with?(&1, "VmRSS:"))

    [_, kb, "kB"] = String.split(line)
    String.to_integer(kb)
  end
end
