# bench/pool_case.exs - the "pool" case of `make bench` (issue 15's
# benchmark), loaded by bench/driver.exs.
#
# A pool of 1, 2 and 3 C nodes on this machine (bench/run starts three
# fresh ones for this case: BENCH_POOL, BENCH_POOL_OSPIDS), each run sent
# to the node its id ranks first, with the library's own placement
# (lib/council_ex/pool/placement.ex, compiled here), against one BEAM node
# doing the same work (the baseline node: BenchBeam.Run and
# BenchBeam.Council under its DynamicSupervisors). For each pool size:
#
#   * run starts/s: 8 concurrent callers start idle runs (the starts
#     case's spec); the runs are cancelled between repetitions (untimed);
#   * mock council runs/s: 8 concurrent callers each start a full mock
#     council (3 members, 3 rounds, chair) and await it;
#   * CPU per council run: CPU time (every thread's schedstat, /proc) of
#     the C nodes of the pool, of the BEAM node and of this driver (the callers) over
#     the council runs, divided by the runs: what a run costs wherever it
#     runs, from which the throughput on a machine with more cores can be
#     worked out on paper (README, "Scaling out").
#
# On the 2-core development machine the callers, the BEAM node and the C
# nodes share two cores, so more nodes cannot give more throughput here;
# the rows show what the spreading costs and what each run costs.

defmodule B.Pool do
  @moduledoc false
  import B, only: [c: 2, row: 1, fmt: 2, f1: 1, pctf: 1, alternate: 3, now: 0]

  alias B.Stats

  @reg "CouncilEx.Runner.Registry"
  @callers 8

  def root, do: Path.expand("..", Path.dirname(__ENV__.file))

  def nodes do
    System.get_env("BENCH_POOL", "") |> String.split(",", trim: true) |> Enum.map(&String.to_atom/1)
  end

  def ospids, do: System.get_env("BENCH_POOL_OSPIDS", "") |> String.split(",", trim: true)

  def setup do
    Code.compiler_options(ignore_module_conflict: true)

    {:ok, _, _} =
      Kernel.ParallelCompiler.compile([Path.join(root(), "lib/council_ex/pool/placement.ex")])

    all = nodes()

    cond do
      length(all) < 3 ->
        {:error,
         "bench/run started no pool nodes (BENCH_POOL=#{inspect(System.get_env("BENCH_POOL"))})"}

      Enum.all?(all, &Node.connect/1) ->
        :ok

      true ->
        {:error, "cannot connect to the pool nodes #{inspect(all)}"}
    end
  end

  # the node of `id` in `pool`, as CouncilEx.Pool places it
  defp place(id, pool), do: CouncilEx.Pool.Placement.owner(id, pool)

  defp start_on(pool, spec) do
    id = B.new_id()
    node = place(id, pool)
    {:ok, pid} = B.call({:council_ex, node}, {:start, %{spec: spec, input: "x", run_id: id}})
    {id, node, pid}
  end

  # ---- run starts

  # `total` starts by 8 callers with `start` (-> a run pid): starts/s, CPU
  # µs per start of each of `ospids`, each start's latency; then (untimed)
  # `stop` on each run, so that every repetition starts from the same
  defp starts(total, start, stop, ospids) do
    per = div(total, @callers)
    before = Enum.map(ospids, &cpu_ns/1)
    t0 = now()

    tasks =
      for _ <- 1..@callers do
        Task.async(fn ->
          for _ <- 1..per do
            s = now()
            pid = start.()
            {now() - s, pid}
          end
        end)
      end

    results = tasks |> Task.await_many(:infinity) |> List.flatten()
    rate = length(results) / ((now() - t0) / 1.0e9)
    cpu = Enum.zip_with(before, Enum.map(ospids, &cpu_ns/1), &((&2 - &1) / 1000 / total))
    cancel_all(Enum.map(results, &elem(&1, 1)), stop)
    {rate, cpu, Enum.map(results, &elem(&1, 0))}
  end

  defp starts_pool(pool, total, ospids) do
    starts(
      total,
      fn -> elem(start_on(pool, B.idle_spec_json()), 2) end,
      fn pid -> B.call(pid, :cancel, 60_000) end,
      ospids
    )
  end

  defp starts_beam(total, ospids) do
    starts(
      total,
      fn ->
        {:ok, pid} = B.beam_start(B.new_id())
        pid
      end,
      fn pid -> DynamicSupervisor.terminate_child({BenchBeam.RunSup, B.beam()}, pid) end,
      ospids
    )
  end

  defp cancel_all(pids, fun) do
    pids
    |> Task.async_stream(fun, max_concurrency: 16, timeout: :infinity, ordered: false)
    |> Stream.run()
  end

  # ---- mock council runs

  defp council_pool(pool) do
    {id, node, pid} = start_on(pool, B.council_spec_json())

    reply =
      try do
        GenServer.call(pid, :await, 60_000)
      catch
        :exit, {reason, _} when reason == :noproc or reason == :normal ->
          GenServer.call({:council_ex, node}, {:result, @reg, id}, 60_000)
      end

    {:ok, %{final: f}} = reply
    true = is_binary(f)
  end

  # 8 callers, `per` runs each: {runs/s, CPU µs per run of each OS process}
  defp councils(f, per, ospids) do
    before = Enum.map(ospids, &cpu_ns/1)
    {rate, _samples} = B.concurrent(@callers, per, fn _ -> f end)
    after_ = Enum.map(ospids, &cpu_ns/1)
    runs = @callers * per
    {rate, Enum.zip_with(before, after_, fn b, a -> (a - b) / 1000 / runs end)}
  end

  # CPU time of an OS process in ns, all its threads: the first field of
  # each thread's /proc/PID/task/TID/schedstat (time on a CPU, in ns;
  # /proc/PID/stat counts clock ticks of 10 ms)
  def cpu_ns(ospid) do
    case File.ls("/proc/#{ospid}/task") do
      {:ok, tids} ->
        Enum.reduce(tids, 0, fn tid, acc ->
          case File.read("/proc/#{ospid}/task/#{tid}/schedstat") do
            {:ok, s} -> acc + (s |> String.split() |> hd() |> String.to_integer())
            _ -> acc
          end
        end)

      _ ->
        0
    end
  end

  # ------------------------------------------------------------------ case

  def case_pool do
    case setup() do
      :ok ->
        run()

      {:error, why} ->
        [B.na("pool of C nodes", "see the rows below", why)]
    end
  end

  defp run do
    {starts_total, starts_reps} = c({80, 1}, {8_000, 3})
    {per, reps} = c({3, 1}, {300, 3})
    all = nodes()
    osp = ospids()
    me = System.pid()
    bpid = :rpc.call(B.beam(), BenchBeam.Info, :os_pid, [])

    # warm both sides
    starts_pool(all, @callers * 4, [])
    starts_beam(@callers * 4, [])
    councils(fn -> council_pool(all) end, 2, [])
    councils(&B.council_beam/0, 2, [])

    rows =
      for k <- 1..3 do
        pool = Enum.take(all, k)
        pool_osp = Enum.take(osp, k)

        {s, bs} =
          alternate(starts_reps, fn -> starts_pool(pool, starts_total, pool_osp ++ [me]) end, fn ->
            starts_beam(starts_total, [bpid, me])
          end)

        {cr, bcr} =
          alternate(
            reps,
            fn -> councils(fn -> council_pool(pool) end, per, pool_osp ++ [me]) end,
            fn -> councils(&B.council_beam/0, per, [bpid, me]) end
          )

        ss = Stats.values(Enum.map(s, &elem(&1, 0)))
        sl = Stats.latency(Enum.map(s, &elem(&1, 2)))
        sb = Stats.values(Enum.map(bs, &elem(&1, 0)))
        cs = Stats.values(Enum.map(cr, &elem(&1, 0)))
        cb = Stats.values(Enum.map(bcr, &elem(&1, 0)))
        cpu = cpu_med(cr)
        b_cpu = cpu_med(bcr)
        nodes_cpu = cpu |> Enum.take(k) |> Enum.sum()
        s_cpu = cpu_med(s)
        sb_cpu = cpu_med(bs)
        s_nodes_cpu = s_cpu |> Enum.take(k) |> Enum.sum()
        label = "pool of #{k} C node#{if k > 1, do: "s", else: ""} (8 concurrent callers)"

        [
          row(
            case: label,
            metric: "run starts/s (#{starts_reps}x#{starts_total} idle runs, placed by run id)",
            unit: :per_s,
            ours: ss.median,
            beam: sb.median,
            ours_detail:
              "#{fmt(ss.median, :per_s)} (spread #{pctf(ss.spread)}); per start median #{fmt(sl.median, :us)}, p99 #{fmt(sl.p99, :us)}",
            beam_detail: "one BEAM node: #{fmt(sb.median, :per_s)} (spread #{pctf(sb.spread)})",
            ratio: ss.median / sb.median,
            target: "info",
            verdict: "info",
            raw: %{ours: ss, beam: sb, ours_latency: sl}
          ),
          cpu_row(label, "CPU per run start", k, s_nodes_cpu, s_cpu, sb_cpu),
          row(
            case: label,
            metric: "mock council runs/s (#{reps}x#{@callers}x#{per} runs, start + :await)",
            unit: :per_s,
            ours: cs.median,
            beam: cb.median,
            ours_detail: "#{fmt(cs.median, :per_s)} (spread #{pctf(cs.spread)})",
            beam_detail: "one BEAM node: #{fmt(cb.median, :per_s)} (spread #{pctf(cb.spread)})",
            ratio: cs.median / cb.median,
            target: "info",
            verdict: "info",
            raw: %{ours: cs, beam: cb}
          ),
          cpu_row(label, "CPU per mock council run", k, nodes_cpu, cpu, b_cpu)
        ]
      end

    List.flatten(rows)
  end

  # CPU µs per run of the k serving C nodes (summed) and the callers,
  # against the BEAM node's and its callers'
  defp cpu_row(label, what, k, nodes_cpu, cpu, b_cpu) do
    row(
      case: label,
      metric: "#{what} (the serving nodes; the callers)",
      unit: :us,
      ours: nodes_cpu * 1000,
      beam: hd(b_cpu) * 1000,
      ours_detail:
        "C nodes #{f1(nodes_cpu)} µs (#{Enum.map_join(Enum.take(cpu, k), " + ", &f1/1)}); callers #{f1(List.last(cpu))} µs",
      beam_detail: "BEAM node #{f1(hd(b_cpu))} µs; callers #{f1(List.last(b_cpu))} µs",
      ratio: if(hd(b_cpu) > 0, do: nodes_cpu / hd(b_cpu)),
      target: "info (lower is better)",
      verdict: "info",
      raw: %{ours_cpu_us: cpu, beam_cpu_us: b_cpu}
    )
  end

  # the median over repetitions of each process's CPU µs per run
  defp cpu_med(reps) do
    reps
    |> Enum.map(&elem(&1, 1))
    |> Enum.zip_with(& &1)
    |> Enum.map(fn vals -> Stats.values(vals).median end)
  end
end
