# bench/llm_case.exs - the "llm" case of `make bench` (issue 8's benchmark),
# loaded by bench/driver.exs. Many concurrent streaming chat completions on
# 127.0.0.1: the native core's "openai" provider (bench/c/bench_llm.c, one
# OS process per measurement) against OTP's :httpc (bench/llm_baseline.exs,
# likewise), the same servers for both:
#
#   - burst: test/c/helpers/fake_llm, model "tokens-T": every stream gets T
#     deltas as fast as the server writes them. CPU time of the client
#     process per token received (the server's CPU is not counted; it runs
#     on the same 2 cores and competes with the client), tokens per
#     CPU-second, time to first token and the gaps between tokens as the
#     client sees them (a proxy: the server does not timestamp its writes);
#   - paced: `bench_llm serve` writes each stream's deltas at a model's pace
#     and puts its CLOCK_REALTIME (ns) in each, so the client measures the
#     latency from the server's write to the token reaching the application
#     (member_token event / parsed delta): the latency the client adds,
#     loopback and wake-up included;
#   - open: fake_llm's "slow" model (one delta, then silence): memory per
#     open stream (VmRSS growth / streams).
# Sides alternate; every client is a fresh OS process.

defmodule B.Llm do
  @moduledoc false
  import B, only: [c: 2, bin: 0, row: 1, fmt: 2, f1: 1, f2: 1, verdict: 1, ratio: 2]
  alias B.Stats

  @ulimit ~S{ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@"}

  def fake_llm_path,
    do:
      System.get_env("BENCH_FAKE_LLM") ||
        Path.join([Path.dirname(bin()), "test", "helpers", "fake_llm"])

  def bench_llm, do: Path.join(bin(), "bench_llm")
  def baseline_script, do: Path.join(Path.dirname(__ENV__.file), "llm_baseline.exs")

  # ------------------------------------------------------------- processes

  # a server on a port: its stdin is the port's pipe (both servers exit when
  # it closes); returns {port, tcp_port, os_pid}
  def start_server(exe, args, ready) do
    port =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        :exit_status,
        {:line, 1024},
        args: ["-c", @ulimit, exe | args]
      ])

    {:os_pid, ospid} = Port.info(port, :os_pid)
    {port, await_ready(port, ready, ""), ospid}
  end

  defp await_ready(port, ready, seen) do
    receive do
      {^port, {:data, {:eol, line}}} ->
        case Regex.run(ready, line) do
          [_, p] -> String.to_integer(p)
          _ -> await_ready(port, ready, seen <> line <> "\n")
        end

      {^port, {:data, {:noeol, part}}} ->
        await_ready(port, ready, seen <> part)

      {^port, {:exit_status, st}} ->
        raise "server exited (status #{st}) before it was ready: #{String.slice(seen, 0, 300)}"
    after
      15_000 -> raise "server not ready after 15 s: #{String.slice(seen, 0, 300)}"
    end
  end

  def stop_server({port, _, ospid}) do
    try do
      Port.close(port)
    rescue
      _ -> :ok
    end

    # it exits at the end of its stdin; make sure
    Process.sleep(100)
    if File.exists?("/proc/#{ospid}"), do: System.cmd("kill", ["-TERM", "#{ospid}"])
    :ok
  end

  defp run(exe, args, what) do
    {text, rc} =
      System.cmd("/bin/sh", ["-c", @ulimit, exe | Enum.map(args, &to_string/1)],
        stderr_to_stdout: true
      )

    m = B.at_lines(text)

    if rc != 0 do
      raise "#{what} #{Enum.join(Enum.map(args, &to_string/1), " ")} failed (status #{rc}): " <>
              String.slice(String.replace(text, ~r/^@ .*\n/m, ""), -400, 400)
    end

    m
  end

  def c_side(args), do: run(bench_llm(), args, "bench_llm")

  def beam_side(args),
    do: run(System.find_executable("elixir"), [baseline_script() | args], "llm_baseline.exs")

  # ------------------------------------------------------------------ case

  def case_llm do
    {n, t, reps} = c({10, 20, 1}, {1000, 500, 3})
    # paced loads: {deltas per stream, µs between deltas}
    {pn, loads, preps} = c({10, [{5, 2000}, {5, 1000}], 1}, {1000, [{20, 100_000}, {100, 20_000}], 2})
    on = c(10, 1000)

    fake = start_server(fake_llm_path(), ["--port", "0"], ~r/^fake_llm ready port=(\d+)/)

    paced_srv =
      try do
        start_server(bench_llm(), ["serve", "--port", "0"], ~r/^bench_llm serve ready port=(\d+)/)
      rescue
        e ->
          stop_server(fake)
          reraise e, __STACKTRACE__
      end

    try do
      base = "http://127.0.0.1:#{elem(fake, 1)}"
      pbase = "http://127.0.0.1:#{elem(paced_srv, 1)}"

      {cs, bs} =
        B.alternate(
          reps,
          fn -> c_side(["stream", "--base", base, "--streams", n, "--tokens", t]) end,
          fn -> beam_side(["stream", base, n, t]) end
        )

      paced =
        for {pt, iv} <- loads do
          {pc, pb} =
            B.alternate(
              preps,
              fn ->
                f = samples_file("c")
                args = ["--streams", pn, "--tokens", pt, "--interval-us", iv, "--samples", f]
                {c_side(["paced", "--base", pbase | args]), f}
              end,
              fn ->
                f = samples_file("beam")
                {beam_side(["paced", pbase, pn, pt, iv, f]), f}
              end
            )

          pc = Enum.reverse(pc)
          pb = Enum.reverse(pb)

          %{
            tokens: pt,
            interval_us: iv,
            c: Enum.map(pc, &elem(&1, 0)),
            beam: Enum.map(pb, &elem(&1, 0)),
            c_pool: pool(Enum.map(pc, &elem(&1, 1))),
            beam_pool: pool(Enum.map(pb, &elem(&1, 1)))
          }
        end

      c_open = c_side(["open", "--base", base, "--streams", on])
      c_idle = c_side(["idle", "--streams", on])
      b_open = beam_side(["open", base, on])
      prof = profile(base, pbase)

      data = %{
        streams: n,
        tokens: t,
        reps: reps,
        burst: %{c: Enum.reverse(cs), beam: Enum.reverse(bs)},
        paced_streams: pn,
        paced: paced,
        open: %{streams: on, c: c_open, c_idle: c_idle, beam: b_open},
        profile: prof
      }

      Process.put(:llm, data)
      rows(data)
    after
      stop_server(fake)
      stop_server(paced_srv)
    end
  end

  defp samples_file(side),
    do: Path.join(B.tmp(), "llm-lat-#{side}-#{System.unique_integer([:positive])}.txt")

  # every repetition's latency samples together (as the driver's other
  # latency rows do): %{steady: stats, all: stats}
  def pool(files) do
    {steady, all} =
      Enum.reduce(files, {[], []}, fn f, acc ->
        acc =
          f
          |> File.read!()
          |> String.split("\n", trim: true)
          |> Enum.reduce(acc, fn line, {st, al} ->
            [ns, flag] = String.split(line, " ")
            v = String.to_integer(ns)
            {if(flag == "1", do: [v | st], else: st), [v | al]}
          end)

        File.rm(f)
        acc
      end)

    %{steady: stats(steady), all: stats(all)}
  end

  defp stats([]), do: %{n: 0, median: 0, p90: 0, p99: 0, max: 0}

  defp stats(l) do
    st = Stats.sorted_stats(l)
    t = l |> Enum.sort() |> List.to_tuple()
    Map.put(st, :p90, Stats.pct(t, st.n, 0.9))
  end

  # ------------------------------------------------------------------ rows

  defp med(list, key), do: Stats.values(Enum.map(list, & &1[key]))
  # a duration in ns, in the unit that suits it; "-" for a figure a run
  # has none of (e.g. no steady-state samples in a short smoke run)
  defp dur(nil), do: "-"
  defp dur(ns) when ns < 1000, do: "#{round(ns)} ns"
  defp dur(ns) when ns < 1.0e6, do: "#{f1(ns / 1000)} µs"
  defp dur(ns) when ns < 1.0e9, do: "#{f1(ns / 1.0e6)} ms"
  defp dur(ns), do: "#{f2(ns / 1.0e9)} s"
  defp ms(ns), do: dur(ns)
  defp us(ns), do: dur(ns)
  defp signed(ns, f), do: if(ns >= 0, do: "+" <> f.(ns), else: "-" <> f.(-ns))
  defp n1000(n), do: B.thousands(n)
  defp kib(b), do: "#{f1(b / 1024)} KiB"
  defp rate(p), do: B.thousands(round(1.0e6 / p.interval_us))
  defp median_of(1), do: "1 repetition"
  defp median_of(n), do: "median of #{n} repetitions"
  defp pooled(1), do: "1 repetition"
  defp pooled(n), do: "the samples of #{n} repetitions together"

  def rows(d) do
    %{c: cs, beam: bs} = d.burst
    name = "LLM streaming: #{n1000(d.streams)} concurrent streams x #{d.tokens} tokens (fake OpenAI server, as fast as it writes)"
    cpu_c = med(cs, "cpu_ns_per_token")
    cpu_b = med(bs, "cpu_ns_per_token")
    tps_c = med(cs, "tokens_per_cpu_s")
    tps_b = med(bs, "tokens_per_cpu_s")
    r_tps = ratio(tps_c.median, tps_b.median)

    side = fn l ->
      w = med(l, "tokens_per_wall_s").median
      cpu = med(l, "cpu_us").median
      wall = med(l, "wall_ns").median

      "#{fmt(med(l, "cpu_ns_per_token").median, :us)} (spread #{B.pctf(med(l, "cpu_ns_per_token").spread)}); " <>
        "#{f2(cpu / 1.0e6)} s CPU over #{f2(wall / 1.0e9)} s wall for #{n1000(round(hd(l)["tokens"]))} tokens (#{n1000(round(w))} tokens/s)"
    end

    lat = fn l ->
      "TTFT p50 #{ms(med(l, "ttft_ns_p50").median)}, p99 #{ms(med(l, "ttft_ns_p99").median)}; " <>
        "gap p50 #{us(med(l, "gap_ns_p50").median)}, p99 #{us(med(l, "gap_ns_p99").median)}, max #{ms(med(l, "gap_ns_max").median)}"
    end

    diff = fn key, f -> signed(med(cs, key).median - med(bs, key).median, f) end

    burst = [
      row(
        case: name,
        metric: "CPU per streamed token (client process, user + sys; #{median_of(d.reps)})",
        unit: :us,
        ours: cpu_c.median,
        beam: cpu_b.median,
        ours_detail: side.(cs),
        beam_detail: side.(bs),
        ratio: ratio(cpu_c.median, cpu_b.median),
        target: "<= 2 µs per token",
        verdict: verdict(cpu_c.median <= 2000),
        raw: %{ours: cpu_c, beam: cpu_b}
      ),
      row(
        case: name,
        metric: "tokens per CPU-second of the client process",
        unit: :per_s,
        ours: tps_c.median,
        beam: tps_b.median,
        ours_detail: "#{fmt(tps_c.median, :per_s)} (spread #{B.pctf(tps_c.spread)})",
        beam_detail: "#{fmt(tps_b.median, :per_s)} (spread #{B.pctf(tps_b.spread)})",
        ratio: r_tps,
        target: ">= 3x :httpc",
        verdict: if(r_tps, do: verdict(r_tps >= 3.0), else: "n/a"),
        raw: %{ours: tps_c, beam: tps_b}
      ),
      row(
        case: name,
        metric: "time to first token and gaps between tokens as the client sees them (proxy; medians of per-repetition p50/p99)",
        unit: :us,
        ours_detail:
          lat.(cs) <>
            "; minus :httpc: TTFT p50 #{diff.("ttft_ns_p50", &ms/1)}, p99 #{diff.("ttft_ns_p99", &ms/1)}, gap p50 #{diff.("gap_ns_p50", &us/1)}, p99 #{diff.("gap_ns_p99", &us/1)}",
        beam_detail: lat.(bs),
        target: "(info: all streams start at once and the server writes without pauses; see the LLM section)",
        raw: %{ours: cs, beam: bs}
      )
    ]

    paced =
      for p <- d.paced do
        pname =
          "LLM streaming: added latency per token, #{n1000(d.paced_streams)} streams x #{rate(p)} tokens/s each (paced server, #{p.tokens} tokens per stream)"

        lc = p.c_pool.steady.p99
        lb = p.beam_pool.steady.p99

        det = fn l, pool ->
          reps = Enum.map_join(l, ", ", &us(&1["steady_lat_ns_p99"]))
          cpu = Stats.values(Enum.map(l, & &1["cpu_ns_per_token"])).median
          tps = Stats.values(Enum.map(l, & &1["tokens_per_wall_s"])).median

          "steady state p50 #{us(pool.steady.median)}, p90 #{us(pool.steady.p90)}, p99 #{us(pool.steady.p99)}, max #{ms(pool.steady.max)} (#{n1000(pool.steady.n)} tokens; p99 per repetition: #{reps}); " <>
            "all tokens, start-up included: p99 #{ms(pool.all.p99)}, max #{ms(pool.all.max)}; " <>
            "CPU #{us(cpu)} per token (#{n1000(round(tps))} tokens/s)"
        end

        row(
          case: pname,
          metric: "p99 from the server's write to the token reaching the application (steady state; #{pooled(length(p.c))})",
          unit: :us,
          ours: lc,
          beam: lb,
          ours_detail: det.(p.c, p.c_pool),
          beam_detail: det.(p.beam, p.beam_pool),
          ratio: ratio(lc, lb),
          target: "p99 added latency <= 1 ms",
          verdict: verdict(lc <= 1.0e6),
          raw: %{ours: p.c, beam: p.beam, ours_pooled: p.c_pool, beam_pooled: p.beam_pool}
        )
      end

    o = d.open
    mc = o.c["rss_bytes_per_stream"]
    mb = o.beam["rss_bytes_per_stream"]

    mem =
      row(
        case: "LLM streaming: memory per open stream (#{n1000(o.streams)} streams of the \"slow\" model: one delta, then silence)",
        metric: "VmRSS growth / open streams",
        unit: :bytes,
        ours: mc,
        beam: mb,
        ours_detail:
          "#{kib(mc)} (RSS #{round(o.c["rss_kb_before"])} -> #{round(o.c["rss_kb_after"])} KiB; malloc'ed #{kib(o.c["heap_bytes_per_stream"])}/stream); " <>
            "a run without a stream (mock member waiting) costs #{kib(o.c_idle["rss_bytes_per_stream"])} RSS, #{kib(o.c_idle["heap_bytes_per_stream"])} malloc'ed",
        beam_detail:
          "#{kib(mb)} (RSS #{round(o.beam["rss_kb_before"])} -> #{round(o.beam["rss_kb_after"])} KiB; erlang:memory #{kib(o.beam["erlang_memory_bytes_per_stream"])}/stream; first delta delivered on #{round(o.beam["first_deltas_delivered"])} of #{round(o.beam["open_streams"])} open streams)",
        ratio: ratio(mc, mb),
        target: "(reported)",
        raw: %{ours: o.c, ours_idle: o.c_idle, beam: o.beam}
      )

    burst ++ paced ++ [mem]
  end

  # -------------------------------------------------------------- profile

  # perf record (DWARF call graphs) of bench_llm in a burst and at the
  # faster paced load; the reports as text
  def profile(base, pbase) do
    if not B.perf?() do
      nil
    else
      %{
        burst: perf(["stream", "--base", base, "--streams", "300", "--tokens", "500"]),
        paced:
          perf(["paced", "--base", pbase, "--streams", "1000", "--tokens", "30", "--interval-us", "20000"])
      }
    end
  rescue
    e -> %{error: Exception.message(e)}
  end

  defp perf(args) do
    data = Path.join(B.tmp(), "perf-llm.data")

    {out, rc} =
      System.cmd(
        "perf",
        ["record", "-F", "999", "--call-graph", "dwarf", "-o", data, "--", bench_llm() | args],
        stderr_to_stdout: true
      )

    if rc != 0 do
      %{error: String.slice(out, -300, 300)}
    else
      report = &B.perf_report(data, &1, 25, ~r/\] 0x[0-9a-f]+$/)

      %{
        args: Enum.join(args, " ") |> String.replace(~r/http:\/\/127\.0\.0\.1:\d+/, "URL"),
        dso: report.(["--no-children", "--sort", "dso"]),
        self: report.(["--no-children", "--sort", "dso,symbol", "--percent-limit", "1.5"]),
        children: report.(["--children", "--sort", "symbol", "--percent-limit", "5"])
      }
    end
  end

  # --------------------------------------------------------------- report

  def section(nil), do: ""

  def section(d) do
    """
    ## LLM streaming (issue 8): how it is measured

    - **Clients.** This project: `bench/c/bench_llm.c`, the native C API
      linked statically (`-O2`): one `council_ctx`, one run per stream with
      one `openai` member (a spec takes at most 64 members, and N runs are N
      independent member calls, as N concurrent councils make), all begun
      at once, a subscriber per run; libcurl's multi interface on the
      core's libuv loop, SSE parsed by the core, each event's JSON parsed
      with jansson, each text delta published as a `member_token` event and
      delivered to the subscriber. The baseline: `bench/llm_baseline.exs`,
      OTP's `:httpc` (`sync: false, stream: :self`, a profile allowing one
      connection per request), one Elixir process per stream that splits
      the SSE into events and decodes each with jiffy (a C NIF), plain
      `elixir` with default VM flags. The baseline hands each delta to
      the process that parsed it; the native side goes through its pub/sub
      to a subscriber (one more step, kept).
    - **Every measurement is a fresh OS process** (sides alternate), after
      one warm-up stream. CPU is the client process's own (getrusage for
      the C side; utime + stime from /proc/self/stat, 10 ms ticks, for the
      BEAM side, whose figure includes its schedulers' busy-waiting), from
      the first request until the last stream ended. **The servers' CPU
      is not counted, but they run on the same #{System.schedulers_online()} cores as the
      client** (fake_llm is a thread per connection), so the client and the
      server compete; wall times and tokens/s depend on both.
    - **Burst** (`fake_llm`, model `tokens-#{d.tokens}`): every stream is written as fast as
      the server can, so reads carry many deltas at once; this is the
      figure for CPU per token. Time to first token is measured from
      `council_run_begin` / the `:httpc.request` call; gaps are between
      consecutive tokens of a stream as the application sees them. Under
      this load they say how the client batches, not how late a token is
      (the server does not timestamp its writes): a time to first token
      close to the burst's wall time means that the application got those
      streams' tokens together, near the end.
    - **Paced** (`bench_llm serve`): each stream gets a delta every
      interval (first one after a random part of an interval), and each
      delta's text is the server's CLOCK_REALTIME in ns just before its
      write(); the client subtracts it from its own clock when the token
      reaches the application (the subscriber's callback / the parsed
      delta): **added latency = that difference** (loopback, wake-up and
      the client's work; both processes read the same clock). "Steady
      state" keeps the tokens the server wrote once every stream had its
      first token; the start-up storm (#{n1000(d.paced_streams)} connections at once) is
      in the "all tokens" figure and in time to first token. The row's
      percentiles pool the samples of every repetition; the table below
      gives each repetition's own.
    - **Memory per open stream**: VmRSS growth from before the streams to
      when every stream is open (the C side: every stream delivered its
      one delta; :httpc: every stream's headers arrived (stream_start),
      because :httpc sometimes keeps the bytes that came with the headers
      until more arrive: the row says on how many streams the delta was
      delivered), divided by the streams; for the C side also the malloc'ed
      bytes (mallinfo2) and the same figures for runs whose mock member
      waits without any stream.

    #{burst_table(d)}
    #{paced_table(d)}
    #{profile_text(d.profile)}
    """
  end

  defp burst_table(d) do
    keys = [
      {"CPU per token", "cpu_ns_per_token", &us/1},
      {"tokens per CPU-second", "tokens_per_cpu_s", &n1000(round(&1))},
      {"wall time", "wall_ns", &ms/1},
      {"tokens/s (wall)", "tokens_per_wall_s", &n1000(round(&1))},
      {"TTFT p50", "ttft_ns_p50", &ms/1},
      {"TTFT p99", "ttft_ns_p99", &ms/1},
      {"gap p50", "gap_ns_p50", &us/1},
      {"gap p90", "gap_ns_p90", &us/1},
      {"gap p99", "gap_ns_p99", &us/1},
      {"gap max", "gap_ns_max", &ms/1},
      {"RSS after the burst", "rss_kb_after", &"#{round(&1)} KiB"},
      {"peak RSS (VmHWM)", "rss_kb_peak", &"#{round(&1)} KiB"},
      {"malloc'ed after the burst", "heap_kb_after", &"#{round(&1)} KiB"}
    ]

    per = fn l, k, f -> Enum.map_join(l, " / ", &if(&1[k], do: f.(&1[k]), else: "-")) end

    """
    Burst, every repetition (#{n1000(d.streams)} streams x #{d.tokens} tokens; this project / :httpc):

    | figure | this project | :httpc |
    |---|---|---|
    #{Enum.map_join(keys, "\n", fn {label, k, f} -> "| #{label} | #{per.(d.burst.c, k, f)} | #{per.(d.burst.beam, k, f)} |" end)}
    """
  end

  defp paced_table(d) do
    lines =
      for p <- d.paced, {side, l} <- [{"this project", p.c}, {":httpc", p.beam}], r <- l do
        "| #{rate(p)}/s x #{p.tokens} | #{side} | #{us(r["steady_lat_ns_p50"])} | #{us(r["steady_lat_ns_p90"])} | #{us(r["steady_lat_ns_p99"])} | #{ms(r["steady_lat_ns_max"])} | #{ms(r["lat_ns_p99"])} | #{ms(r["ttft_ns_p99"])} | #{us(r["cpu_ns_per_token"])} |"
      end

    """
    Paced, every repetition (#{n1000(d.paced_streams)} streams; latency from the server's write to the application):

    | tokens/s per stream x tokens | side | steady p50 | p90 | p99 | max | all tokens p99 | TTFT p99 | CPU per token |
    |---|---|---|---|---|---|---|---|---|
    #{Enum.join(lines, "\n")}
    """
  end

  defp profile_text(nil),
    do: "No profile of the native client in this run (QUICK=1, BENCH_PERF=0, or no perf).\n"

  defp profile_text(%{error: e}), do: "Profile of the native client: perf failed: `#{e}`\n"

  defp profile_text(p) do
    one = fn
      title, %{error: e} ->
        "### #{title}\n\nperf failed: `#{e}`\n"

      title, r ->
        """
        ### #{title}

        `perf record -F 999 --call-graph dwarf -- bench_llm #{r.args}`, by shared object:

        ```
        #{r.dso}
        ```

        Self time (>= 1.5%; jansson has no symbols here):

        ```
        #{r.self}
        ```

        Inclusive time (children included, >= 5%; unsymbolised frames left out):

        ```
        #{r.children}
        ```
        """
    end

    """
    ## LLM streaming: where the native client's CPU goes

    #{one.("Burst (fake_llm, tokens as fast as written)", p.burst)}
    #{one.("Paced (1,000 streams at 50 tokens/s: about one delta per read)", p.paced)}
    """
  end
end
