# bench/nif_case.exs - the "nif" case of `make bench` (issue 13's
# benchmark), loaded by bench/driver.exs.
#
# The NIF backend in this very VM: priv/council_nif.so (COUNCIL_NIF to name
# another build) with the library's own CouncilEx.Nif and CouncilEx.Nif.Run,
# compiled here from lib/, against the BEAM baseline's designs run locally in
# this VM as well (bench/beam_baseline.exs's BenchBeam.Run under a local
# DynamicSupervisor and unique Registry, BenchBeam.Council, and
# Registry.dispatch for the fan-out): both sides local, as an application
# would use them. The C node's figures for the same operations, measured in
# the same run over distribution, stand beside the NIF's in its column: the
# price of the isolation a separate OS process gives.
#
# Memory per idle run is measured in fresh OS processes, one per side
# (bench/nif_memory.exs), so that neither side reuses memory the other freed.

defmodule B.Nif do
  @moduledoc false
  import B,
    only: [c: 2, row: 1, fmt: 2, pctf: 1, verdict: 1, timed: 2, warm: 2, alternate: 3]

  alias B.Stats

  @reg "CouncilEx.Runner.Registry"

  def root, do: Path.expand("..", Path.dirname(__ENV__.file))

  # The library's NIF modules, the baseline's modules and their local
  # supervision; the NIF's context opened with room for the starts case.
  def setup do
    Code.compiler_options(ignore_module_conflict: true)

    {:ok, _, _} =
      Kernel.ParallelCompiler.compile([
        Path.join(root(), "lib/council_ex/nif/run.ex"),
        Path.join(root(), "lib/council_ex/nif.ex")
      ])

    with :ok <- CouncilEx.Nif.ensure_loaded(),
         :ok <-
           CouncilEx.Nif.call({:open, %{max_runs: 2_000_000, max_retained: 1_000_000}}),
         :ok <-
           B.load_from_baseline([BenchBeam, BenchBeam.Run, BenchBeam.Council, BenchBeam.Fanout]) do
      {:ok, _} =
        Supervisor.start_link(
          [
            {Registry, keys: :unique, name: BenchBeam.Registry},
            {Registry, keys: :duplicate, name: B.Nif.PubReg},
            {DynamicSupervisor,
             strategy: :one_for_one, name: BenchBeam.RunSup, max_children: :infinity},
            {DynamicSupervisor, strategy: :one_for_one, name: BenchBeam.CouncilSup}
          ],
          strategy: :one_for_one
        )

      :ok
    end
  end

  def nif_start(opts \\ %{}),
    do: CouncilEx.Nif.start(Map.merge(%{spec: B.idle_spec_json(), input: "x"}, opts))

  def beam_start do
    DynamicSupervisor.start_child(BenchBeam.RunSup, %{
      id: BenchBeam.Run,
      start:
        {BenchBeam.Run, :start_link, [%{run_id: B.new_id(), spec: B.idle_spec_map(), input: "x"}]},
      restart: :temporary
    })
  end

  # a batch of `per` calls timed as one, in ns per call: reads well under a
  # microsecond are timed in batches (a clock read costs tens of ns)
  def batched(f, batches, per) do
    for _ <- 1..batches do
      t0 = B.now()
      BenchBeam.repeat(f, per)
      (B.now() - t0) / per
    end
  end

  defp cn_median(f, n) do
    warm(f, div(n, 10) + 1)
    Stats.latency([timed(f, n)]).median
  catch
    _, _ -> nil
  end

  defp cn_note(nil), do: ""
  defp cn_note(v), do: "; the C node, over distribution: #{fmt(v, :us)}"

  # ------------------------------------------------------------------ case

  def case_nif do
    case setup() do
      :ok ->
        calls() ++ reads() ++ starts() ++ memory() ++ fanout() ++ council()

      {:error, why} ->
        [B.na("NIF backend (priv/council_nif.so in this VM)", "see the rows below", inspect(why))]
    end
  end

  # ---- a call to a run pid

  def calls do
    name = "NIF backend: GenServer.call to a run pid, local, 1 caller"
    {warmn, n, reps} = c({100, 300, 2}, {2000, 20_000, 5})
    {:ok, np} = nif_start()
    {:ok, bp} = beam_start()

    cn =
      case B.cn_start(%{}) do
        {:ok, cp} -> cn_median(fn -> GenServer.call(cp, :run_id) end, c(200, 5000))
        _ -> nil
      end

    for req <- [:run_id, :state] do
      ours = fn -> GenServer.call(np, req) end
      theirs = fn -> GenServer.call(bp, req) end
      warm(ours, warmn)
      warm(theirs, warmn)
      {a, b} = alternate(reps, fn -> timed(ours, n) end, fn -> timed(theirs, n) end)
      sa = Stats.latency(a)
      sb = Stats.latency(b)
      r = sa.median / sb.median

      row(
        case: name,
        metric: "median latency of #{inspect(req)} (#{reps}x#{n} calls)",
        unit: :us,
        ours: sa.median,
        beam: sb.median,
        ours_detail:
          "median #{fmt(sa.median, :us)}, p99 #{fmt(sa.p99, :us)}, spread #{pctf(sa.spread)}" <>
            if(req == :run_id, do: cn_note(cn), else: ""),
        beam_detail:
          "median #{fmt(sb.median, :us)}, p99 #{fmt(sb.p99, :us)} (a local GenServer run)",
        ratio: r,
        target: "<= 1.0x a local GenServer.call",
        verdict: verdict(r <= 1.0),
        raw: %{ours: sa, beam: sb, c_node: cn}
      )
    end
  end

  # ---- state and whereis by id

  def reads do
    name = "NIF backend: state/2 and whereis/2 by run id, local, 1 caller"
    {batches, per} = c({20, 100}, {200, 1000})
    ids = for _ <- 1..1000, do: B.new_id()
    for id <- ids, do: {:ok, _} = nif_start(%{run_id: id})

    for id <- ids,
        do:
          {:ok, _} =
            DynamicSupervisor.start_child(BenchBeam.RunSup, %{
              id: BenchBeam.Run,
              start:
                {BenchBeam.Run, :start_link, [%{run_id: id, spec: B.idle_spec_map(), input: "x"}]},
              restart: :temporary
            })

    t = List.to_tuple(ids)
    pick = fn -> elem(t, :rand.uniform(1000) - 1) end

    cases = [
      {"state", fn -> {:ok, _} = CouncilEx.Nif.call({:state, @reg, pick.()}) end,
       fn ->
         [{pid, _}] = Registry.lookup(BenchBeam.Registry, pick.())
         {:ok, _} = GenServer.call(pid, :state)
       end, "Registry.lookup + GenServer.call(pid, :state)", {:state, @reg}},
      {"whereis", fn -> {:ok, _} = CouncilEx.Nif.call({:whereis, @reg, pick.()}) end,
       fn -> [{_, _}] = Registry.lookup(BenchBeam.Registry, pick.()) end, "Registry.lookup",
       {:whereis, @reg}}
    ]

    for {what, ours, theirs, bdesc, {op, reg}} <- cases do
      warm(ours, 1000)
      warm(theirs, 1000)

      {a, b} =
        alternate(3, fn -> batched(ours, batches, per) end, fn -> batched(theirs, batches, per) end)

      sa = Stats.latency(a)
      sb = Stats.latency(b)

      cn =
        cn_median(
          fn -> GenServer.call({:council_ex, B.cn()}, {op, reg, pick.()}) end,
          c(200, 5000)
        )

      row(
        case: name,
        metric: "#{what} by id, 1k live runs (batches of #{per}, median of batch means)",
        unit: :ns,
        ours: sa.median,
        beam: sb.median,
        ours_detail: "#{fmt(sa.median, :ns)} (p99 of batches #{fmt(sa.p99, :ns)})#{cn_note(cn)}",
        beam_detail: "#{fmt(sb.median, :ns)}: #{bdesc}",
        ratio: sa.median / sb.median,
        target: "<= 0.3 µs",
        verdict: verdict(sa.median <= 300),
        raw: %{ours: sa, beam: sb, c_node: cn}
      )
    end
  end

  # ---- run starts

  def starts do
    name = "NIF backend: run starts, local, 8 concurrent callers"
    {total, batch} = c({2000, 1000}, {100_000, 10_000})

    starter = fn f -> fn _id -> f.() end end
    ours = starter.(fn -> nif_start() end)
    theirs = starter.(fn -> beam_start() end)
    B.start_batch(for(_ <- 1..1000, do: nil), ours)
    B.start_batch(for(_ <- 1..1000, do: nil), theirs)

    {ca, ba} =
      Enum.reduce(B.batches_of(total, batch), {[], []}, fn ids, {ca, ba} ->
        {[B.start_batch(ids, ours) | ca], [B.start_batch(ids, theirs) | ba]}
      end)

    cn_rate =
      try do
        {r, _} = B.start_batch(for(_ <- 1..c(500, 5000), do: nil), fn _ -> B.cn_start(%{}) end)
        r
      catch
        _, _ -> nil
      end

    ra = Stats.values(Enum.map(ca, &elem(&1, 0)))
    rb = Stats.values(Enum.map(ba, &elem(&1, 0)))
    la = Stats.latency(Enum.map(ca, &elem(&1, 1)))
    lb = Stats.latency(Enum.map(ba, &elem(&1, 1)))
    r = ra.median / rb.median
    stop_all()

    [
      row(
        case: name,
        metric: "starts/s (#{div(total, batch)} batches of #{batch}, alternating sides)",
        unit: :per_s,
        ours: ra.median,
        beam: rb.median,
        ours_detail:
          "#{fmt(ra.median, :per_s)} (spread #{pctf(ra.spread)}); per start median #{fmt(la.median, :us)}, p99 #{fmt(la.p99, :us)}" <>
            if(cn_rate, do: "; the C node: #{fmt(cn_rate, :per_s)}", else: ""),
        beam_detail:
          "#{fmt(rb.median, :per_s)} (spread #{pctf(rb.spread)}); per start median #{fmt(lb.median, :us)}, p99 #{fmt(lb.p99, :us)} (DynamicSupervisor + Registry, local)",
        ratio: r,
        target: "starts/s >= 3x BEAM's",
        verdict: verdict(r >= 3.0),
        raw: %{ours: ra, beam: rb, c_node: cn_rate}
      )
    ]
  end

  # the idle runs of the starts case go (the NIF's: cancelled; the
  # baseline's: terminated)
  def stop_all do
    {:ok, %{runs_alive: _}} = CouncilEx.Nif.call(:stats)

    for {_, pid, _, _} <- DynamicSupervisor.which_children(BenchBeam.RunSup),
        do: DynamicSupervisor.terminate_child(BenchBeam.RunSup, pid)

    :ok = CouncilEx.Nif.call(:close)
    :ok = CouncilEx.Nif.call({:open, %{max_runs: 2_000_000, max_retained: 1_000_000}})
  end

  # ---- memory per idle run, each side in a fresh OS process

  def memory do
    name = "NIF backend: memory per idle run (VM and native: RSS of the whole OS process)"
    n = c(2000, 50_000)
    script = Path.join(Path.dirname(__ENV__.file), "nif_memory.exs")

    measure = fn side ->
      {text, rc} =
        System.cmd("elixir", [script, side, Integer.to_string(n)], stderr_to_stdout: true)

      if rc == 0, do: {:ok, B.at_lines(text)}, else: {:error, String.slice(text, -300, 300)}
    end

    case {measure.("nif"), measure.("beam")} do
      {{:ok, a}, {:ok, b}} ->
        r = a["rss_bytes_per_run"] / b["rss_bytes_per_run"]

        [
          row(
            case: name,
            metric: "bytes per idle run (#{n} runs, RSS delta / runs)",
            unit: :bytes,
            ours: a["rss_bytes_per_run"],
            beam: b["rss_bytes_per_run"],
            ours_detail:
              "#{fmt(a["rss_bytes_per_run"], :bytes)} (of which erlang:memory #{fmt(a["vm_bytes_per_run"], :bytes)}#{allocs(a)}; the run's pid #{fmt(a["pid_bytes"], :bytes)}; the rest, #{fmt(a["rss_bytes_per_run"] - a["vm_bytes_per_run"], :bytes)}, mostly malloc's: the core's run and the NIF's record)",
            beam_detail:
              "#{fmt(b["rss_bytes_per_run"], :bytes)} (erlang:memory #{fmt(b["vm_bytes_per_run"], :bytes)}#{allocs(b)}; the run's process #{fmt(b["pid_bytes"], :bytes)})",
            ratio: r,
            target: "<= 0.5x BEAM",
            verdict: verdict(r <= 0.5),
            raw: %{ours: a, beam: b}
          )
        ]

      {x, y} ->
        why = for {:error, w} <- [x, y], do: w
        [B.na(name, "<= 0.5x BEAM", Enum.join(why, "; "))]
    end
  end

  # erlang:memory's growth per run by ERTS allocator (bench/nif_memory.exs),
  # the larger ones, named for what they hold here
  @alloc_names [
    {"alloc_fix_alloc", "process structs"},
    {"alloc_eheap_alloc", "heaps"},
    {"alloc_binary_alloc", "binaries and NIF resources"},
    {"alloc_std_alloc", "monitors and links"},
    {"alloc_ets_alloc", "ETS"},
    {"alloc_driver_alloc", "enif_alloc"}
  ]

  defp allocs(m) do
    parts =
      for {k, what} <- @alloc_names, v = m[k], is_number(v), v >= 1, do: "#{what} #{fmt(v, :bytes)}"

    if parts == [], do: "", else: ": " <> Enum.join(parts, ", ")
  end

  # ---- fan-out to 10 local subscribers

  # how the NIF's events reach the pids (the row's note)
  @nif_sender "each event's term made once; what the core's thread makes sent to each pid with enif_send by the NIF's pump process on its scheduler (a scheduler that drives inline sends its own)"

  def fanout do
    name = "NIF backend: event fan-out to 10 local subscribers"
    {runs, tokens, reps} = c({3, 200, 1}, {40, 1000, 5})
    chunk = "0123456789abcdef"
    spec = B.fanout_spec(tokens, chunk)

    nif_emit = fn _topic, subs, runs ->
      for _ <- 1..runs,
          do: {:ok, _} = CouncilEx.Nif.start(%{spec: spec, input: "x", subscribe: subs})
    end

    # the baseline: the same events, each dispatched with Registry.dispatch
    # to the topic's 10 subscribers (registered in a duplicate Registry)
    beam_emit = fn topic, _subs, runs -> spawn(fn -> emit(topic, runs, tokens, chunk) end) end

    # the ceiling: one process sending the same prebuilt tuples to the 10
    # pids with send/2, nothing looked up (BenchBeam.Fanout's per-pid
    # emitter): one ERTS message per subscriber per event, as the NIF's
    # enif_send and the baseline's dispatch give, at the least cost a
    # sender can have in this VM
    ceil_emit = fn _topic, subs, runs ->
      spawn(BenchBeam.Fanout, :emit, [subs, runs, tokens, chunk, false])
    end

    emits = [nif_emit, beam_emit, ceil_emit]
    for e <- emits, do: fanout_once(1, tokens, e)

    # the sides alternate within each repetition (the machine's load moves)
    results = for _ <- 1..reps, do: Enum.map(emits, &fanout_once(runs, tokens, &1))

    [a, b, ceil] =
      for k <- 0..2 do
        side = Enum.map(results, &Enum.at(&1, k))

        case Enum.find(side, &match?({:error, _}, &1)) do
          {:error, why} -> {:error, why}
          nil -> {:ok, Stats.values(Enum.map(side, &elem(&1, 1))), Enum.all?(side, &elem(&1, 2))}
        end
      end

    lost = fn l -> if l, do: ", nothing lost", else: ", EVENTS MISSING" end

    case {a, b, ceil} do
      {{:ok, sa, la}, {:ok, sb, lb}, {:ok, sc, lc}} ->
        r = sa.median / sb.median
        of_ceil = sa.median / sc.median

        [
          row(
            case: name,
            metric:
              "events/s, each to all 10 subscribers (#{reps}x #{runs} runs x #{tokens + 6} events)",
            unit: :per_s,
            ours: sa.median,
            beam: sb.median,
            ours_detail:
              "#{fmt(sa.median, :per_s)} (spread #{pctf(sa.spread)})#{lost.(la)}: #{round(of_ceil * 100)}% of the ceiling (#{fmt(sc.median, :per_s)}, the row below; Registry.dispatch #{round(sb.median / sc.median * 100)}%); #{@nif_sender}",
            beam_detail:
              "#{fmt(sb.median, :per_s)} (spread #{pctf(sb.spread)})#{lost.(lb)}: Registry.dispatch + send from an emitter process",
            ratio: r,
            target: ">= 2x Registry.dispatch, nothing lost",
            verdict: verdict(r >= 2.0 and la),
            raw: %{
              ours: sa,
              beam: sb,
              ceiling: sc,
              of_ceiling: of_ceil,
              beam_of_ceiling: sb.median / sc.median
            }
          ),
          row(
            case: name,
            metric:
              "ceiling: the same 10 subscribers fed by one process with send/2 of the same prebuilt tuples (no lookup)",
            unit: :per_s,
            beam: sc.median,
            beam_detail: "#{fmt(sc.median, :per_s)} (spread #{pctf(sc.spread)})#{lost.(lc)}",
            target:
              "(context: what any sender of one message per subscriber per event reaches in this VM; 2x Registry.dispatch would be #{round(2 * sb.median / sc.median * 100)}% of it)",
            raw: %{ceiling: sc}
          )
        ]

      _ ->
        why = for {:error, w} <- [a, b, ceil], do: w
        [B.na(name, ">= 2x Registry.dispatch", Enum.join(why, "; "))]
    end
  end

  # subscribers that count events (B's own subscriber), each registered
  # under a fresh topic of the duplicate Registry first (what the
  # baseline's emitter dispatches to; the NIF side subscribes the pids)
  def fanout_once(runs, tokens, emit) do
    me = self()
    topic = "t-" <> B.new_id()

    subs =
      for _ <- 1..10 do
        spawn(fn ->
          Registry.register(B.Nif.PubReg, topic, nil)
          send(me, {:registered, self()})
          B.subscriber(me, runs)
        end)
      end

    for s <- subs, do: receive(do: ({:registered, ^s} -> :ok))
    t0 = B.now()
    emit.(topic, subs, runs)
    result = B.fanout_result(subs, t0, runs, tokens)
    Enum.each(subs, &send(&1, :stop))
    result
  end

  # the event sequence of BenchBeam.Fanout (the C node's tuples), each event
  # through Registry.dispatch
  def emit(topic, runs, tokens, chunk) do
    send_all = fn msg ->
      Registry.dispatch(B.Nif.PubReg, topic, fn entries ->
        for {pid, _} <- entries, do: send(pid, msg)
      end)
    end

    for _ <- 1..runs do
      {before, token, after_} = BenchBeam.Fanout.run_events(B.new_id(), chunk, tokens)
      Enum.each(before, send_all)
      for _ <- 1..tokens, do: send_all.(token)
      Enum.each(after_, send_all)
    end
  end

  # ---- the mock council run

  # start + :await, as the C node's side (council_cn): a run that ended
  # before the call reached it gives its outcome by id
  def nif_council do
    id = B.new_id()
    {:ok, pid} = CouncilEx.Nif.start(%{spec: B.council_spec_json(), input: "x", run_id: id})

    reply =
      try do
        GenServer.call(pid, :await, 60_000)
      catch
        :exit, {reason, _} when reason in [:noproc, :normal] ->
          CouncilEx.Nif.call({:result, @reg, id})
      end

    {:ok, %{final: f}} = reply
    true = is_binary(f)
  end

  def beam_council do
    {:ok, pid} =
      DynamicSupervisor.start_child(BenchBeam.CouncilSup, %{
        id: BenchBeam.Council,
        start: {BenchBeam.Council, :start_link, [%{spec: B.council_spec_map(), input: "x"}]},
        restart: :temporary
      })

    {:ok, %{final: f}} = GenServer.call(pid, :await, 60_000)
    true = is_binary(f)
  end

  def council do
    name = "NIF backend: full mock council run (3 members, 3 rounds, chair), local"
    {warmn, n, reps} = c({5, 20, 1}, {100, 1000, 5})
    warm(&nif_council/0, warmn)
    warm(&beam_council/0, warmn)

    {a, b} =
      alternate(reps, fn -> timed(&nif_council/0, n) end, fn -> timed(&beam_council/0, n) end)

    sa = Stats.latency(a)
    sb = Stats.latency(b)
    t8 = B.concurrent8(&nif_council/0, &beam_council/0)
    cn = cn_median(fn -> B.council_cn() end, c(20, 300))
    note = if(cn, do: "; the C node (start + :await): #{fmt(cn, :us)} per run", else: "")
    B.runs_rows(name, {sa, sb}, t8, "runs/s >= 2x BEAM's", 2.0, note, %{c_node: cn})
  end
end
