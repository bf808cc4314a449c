# bench/llm_baseline.exs - issue 8's benchmark, the BEAM baseline: many
# concurrent streaming chat completions with OTP's own HTTP client (:httpc,
# async streaming: sync: false, stream: :self), the SSE parsed into deltas in
# Elixir and each event's JSON decoded with jiffy (a C NIF, as the native side
# uses jansson). One process per stream, as an Elixir member call would have.
# bench/driver.exs runs it as its own OS process (plain `elixir`, default VM
# flags) so that its CPU time is its own:
#
#   elixir bench/llm_baseline.exs stream BASE_URL N T   N streams of model
#       "tokens-T~bench" (test/c/helpers/fake_llm: T deltas, no pauses)
#   elixir bench/llm_baseline.exs paced BASE_URL N T I [FILE]  against
#       `bench_llm serve`, model "paced-T-I~bench" (T deltas, one every I
#       µs): each delta is the server's CLOCK_REALTIME (ns) at its write;
#       FILE: every token's latency, a line "<ns> <1 if steady, else 0>"
#   elixir bench/llm_baseline.exs open BASE_URL N       model "slow~bench":
#       memory per open stream once every stream has its first delta
#
# Prints "@ key value" lines with the same keys as bench/c/bench_llm.c.
# The CPU figure is the whole OS process's (utime + stime from
# /proc/self/stat) from the first request to the last stream's end; the
# parsing of the samples comes after that window, as on the native side.

Code.require_file("procfs.exs", __DIR__)

defmodule LlmBase do
  @profile :bench_llm

  def mono, do: :erlang.monotonic_time(:nanosecond)

  defdelegate cpu_us, to: Bench.Procfs
  defdelegate rss_kb, to: Bench.Procfs
  defdelegate hwm_kb, to: Bench.Procfs

  def at(k, v) when is_float(v), do: IO.puts("@ #{k} #{:erlang.float_to_binary(v, decimals: 1)}")
  def at(k, v), do: IO.puts("@ #{k} #{v}")

  def pcts(name, samples) do
    n = length(samples)
    at("#{name}_n", n)

    if n > 0 do
      t = samples |> Enum.sort() |> List.to_tuple()
      p = fn q -> elem(t, round(q * (n - 1))) * 1.0 end
      at("#{name}_p50", p.(0.5))
      at("#{name}_p90", p.(0.9))
      at("#{name}_p99", p.(0.99))
      at("#{name}_max", elem(t, n - 1) * 1.0)
      at("#{name}_mean", Enum.sum(samples) / n)
    end
  end

  def setup(n) do
    :ok = Application.ensure_started(:inets)
    {:ok, _} = :inets.start(:httpc, profile: @profile)

    # one connection per request (no queueing of a request behind another
    # stream on a kept-alive session), as many as there are streams
    :ok =
      :httpc.set_options(
        [max_sessions: 2 * n + 10, max_keep_alive_length: 0, max_pipeline_length: 0],
        @profile
      )
  end

  def body(model) do
    ~s({"model":"#{model}","stream":true,"stream_options":{"include_usage":true},) <>
      ~s("messages":[{"role":"user","content":"Say something, token by token."}]})
  end

  def request(url, model) do
    headers = [{~c"authorization", ~c"Bearer sk-bench"}]

    :httpc.request(
      :post,
      {String.to_charlist(url <> "/v1/chat/completions"), headers, ~c"application/json",
       body(model)},
      [timeout: 600_000, connect_timeout: 60_000],
      [sync: false, stream: :self, body_format: :binary],
      @profile
    )
  end

  # ---------------------------------------------------------------- a stream

  defmodule S do
    @moduledoc false
    defstruct ref: nil,
              t_begin: 0,
              t_last: 0,
              ttft: nil,
              ntok: 0,
              gaps: [],
              lats: [],
              text: [],
              buf: "",
              ended: false,
              paced: false,
              first_to: nil,
              first_real: 0,
              error: nil
  end

  # one stream's owner: makes the request, parses the SSE, records tokens
  def stream_proc(parent, url, model, paced, first_to) do
    t0 = mono()
    {:ok, ref} = request(url, model)
    s = loop(%S{ref: ref, t_begin: t0, paced: paced, first_to: first_to})
    send(parent, {:finished, self()})

    receive do
      :report ->
        send(
          parent,
          {:report, self(),
           %{
             ttft: s.ttft,
             ntok: s.ntok,
             gaps: s.gaps,
             lats: s.lats,
             first_real: s.first_real,
             ok: s.error == nil and s.ended,
             error: s.error,
             bytes: IO.iodata_length(s.text)
           }}
        )

      :cancel ->
        :httpc.cancel_request(ref, @profile)
    end
  end

  defp loop(%S{ref: ref} = s) do
    receive do
      {:http, {^ref, :stream_start, _headers}} ->
        if s.first_to, do: send(s.first_to, {:open, self()})
        loop(s)

      {:http, {^ref, :stream, bin}} ->
        s = events(%{s | buf: s.buf <> bin})
        loop(s)

      {:http, {^ref, :stream_end, _headers}} ->
        s

      {:http, {^ref, {:error, reason}}} ->
        %{s | error: inspect(reason)}

      {:http, {^ref, {{_, status, _}, _, body}}} ->
        %{s | error: "HTTP #{status}: #{String.slice(to_string(body), 0, 200)}"}

      :cancel ->
        :httpc.cancel_request(ref, @profile)
        %{s | error: "cancelled"}
    end
  end

  # whole SSE events out of the buffer (a blank line ends one)
  defp events(s) do
    case :binary.split(s.buf, "\n\n") do
      [ev, rest] -> events(event(ev, %{s | buf: rest}))
      [_partial] -> s
    end
  end

  defp event(ev, s) do
    data =
      for line <- :binary.split(ev, "\n", [:global]),
          String.starts_with?(line, "data:") do
        case line do
          "data: " <> d -> d
          "data:" <> d -> d
        end
      end

    case data do
      [] -> s
      ["[DONE]"] -> %{s | ended: true}
      lines -> delta(:jiffy.decode(Enum.join(lines, "\n"), [:return_maps]), s)
    end
  end

  defp delta(%{"choices" => [%{"delta" => %{"content" => c}} | _]}, s)
       when is_binary(c) and c != "" do
    t = mono()

    s =
      if s.paced do
        {sent, _} = Integer.parse(c)
        now = :os.system_time(:nanosecond)
        s = if s.ntok == 0, do: %{s | first_real: now}, else: s
        %{s | lats: [{sent, now - sent} | s.lats]}
      else
        s
      end

    s =
      if s.ntok == 0 do
        if s.first_to, do: send(s.first_to, {:first, self()})
        %{s | ttft: t - s.t_begin}
      else
        %{s | gaps: [t - s.t_last | s.gaps]}
      end

    %{s | t_last: t, ntok: s.ntok + 1, text: [s.text | c]}
  end

  defp delta(%{"choices" => _}, s), do: s
  defp delta(%{"error" => e}, s), do: %{s | error: inspect(e)}
  defp delta(_, s), do: s

  # ------------------------------------------------------------------- modes

  def spawn_streams(n, url, model, paced, first_to) do
    me = self()
    for _ <- 1..n, do: spawn(fn -> stream_proc(me, url, model, paced, first_to) end)
  end

  def await_finished(pids) do
    Enum.each(pids, fn p ->
      receive do
        {:finished, ^p} -> :ok
      after
        600_000 -> raise "stream #{inspect(p)} did not finish"
      end
    end)
  end

  def reports(pids) do
    Enum.map(pids, fn p ->
      send(p, :report)

      receive do
        {:report, ^p, r} -> r
      after
        60_000 -> raise "no report from #{inspect(p)}"
      end
    end)
  end

  def warm_up(url, model) do
    pids = spawn_streams(1, url, model, String.starts_with?(model, "paced"), nil)
    await_finished(pids)
    [r] = reports(pids)
    unless r.ok and r.ntok > 0, do: raise("the warm-up stream failed: #{inspect(r.error)}")
  end

  def stream(url, n, tokens, paced, interval_us \\ 0, samples \\ nil) do
    setup(n)
    warm_up(url, if(paced, do: "paced-2-1000~warm", else: "tokens-20~warm"))

    model =
      if paced,
        do: "paced-#{tokens}-#{interval_us}~bench",
        else: "tokens-#{tokens}~bench"
    rss0 = rss_kb()
    c0 = cpu_us()
    t0 = mono()
    pids = spawn_streams(n, url, model, paced, nil)
    await_finished(pids)
    t1 = mono()
    c1 = cpu_us()
    rss1 = rss_kb()
    rs = reports(pids)
    toks = rs |> Enum.map(& &1.ntok) |> Enum.sum()
    short = Enum.count(rs, &(not &1.ok or &1.ntok != tokens))
    cpu = c1 - c0
    at("streams", n)
    at("tokens_per_stream", tokens)
    at("tokens", toks)
    at("short_streams", short)
    at("failed_runs", Enum.count(rs, &(not &1.ok)))
    at("wall_ns", t1 - t0)
    at("cpu_us", cpu)
    at("cpu_ns_per_token", if(toks > 0, do: cpu * 1000 / toks, else: 0.0))
    at("tokens_per_cpu_s", if(cpu > 0, do: toks / (cpu / 1.0e6), else: 0.0))
    at("tokens_per_wall_s", toks / ((t1 - t0) / 1.0e9))
    at("rss_kb_before", rss0)
    at("rss_kb_after", rss1)
    at("rss_kb_peak", hwm_kb())
    pcts("ttft_ns", for(r <- rs, r.ttft, do: r.ttft))
    pcts("gap_ns", Enum.flat_map(rs, & &1.gaps))
    if paced do
      # steady state: tokens the server wrote once every stream had its
      # first token (the start-up storm of N connections is TTFT's)
      all_first = rs |> Enum.map(& &1.first_real) |> Enum.max()
      lats = Enum.flat_map(rs, & &1.lats)
      pcts("steady_lat_ns", for({sent, l} <- lats, sent >= all_first, do: l))
      pcts("lat_ns", Enum.map(lats, &elem(&1, 1)))

      if samples do
        File.write!(
          samples,
          Enum.map(lats, fn {sent, l} -> [Integer.to_string(l), if(sent >= all_first, do: " 1\n", else: " 0\n")] end)
        )
      end
    end

    case Enum.find(rs, &(not &1.ok)) do
      nil -> :ok
      r -> IO.puts(:stderr, "llm_baseline: a stream failed: #{inspect(r.error)}")
    end

    if short == 0, do: 0, else: 1
  end

  def open(url, n) do
    setup(n)
    # warm-up: one slow stream, opened and cancelled
    me = self()
    [w] = spawn_streams(1, url, "slow~warm", false, me)

    receive do
      {:open, ^w} -> :ok
    after
      30_000 -> raise "the warm-up slow stream got no answer"
    end

    receive do
      {:first, ^w} -> :ok
    after
      2_000 -> :ok
    end

    send(w, :cancel)

    :erlang.garbage_collect()
    Process.sleep(100)
    rss0 = rss_kb()
    mem0 = :erlang.memory(:total)
    pids = spawn_streams(n, url, "slow~bench", false, me)

    # open: the response's headers are in (stream_start); :httpc sometimes
    # holds the bytes that came with the headers (here: the one delta) until
    # more arrive, so a stream counts as open at its headers, and the
    # deltas delivered are counted apart
    got =
      Enum.reduce_while(1..n, 0, fn _, k ->
        receive do
          {:open, _} -> {:cont, k + 1}
        after
          120_000 -> {:halt, k}
        end
      end)

    Process.sleep(300)
    rss1 = rss_kb()
    mem1 = :erlang.memory(:total)
    firsts = count_firsts(0)
    at("streams", n)
    at("open_streams", got)
    at("first_deltas_delivered", firsts)
    at("rss_kb_before", rss0)
    at("rss_kb_after", rss1)
    at("rss_bytes_per_stream", (rss1 - rss0) * 1024 / n)
    at("erlang_memory_bytes_per_stream", (mem1 - mem0) / n)
    Enum.each(pids, &send(&1, :cancel))
    if got == n, do: 0, else: 1
  end

  defp count_firsts(k) do
    receive do
      {:first, _} -> count_firsts(k + 1)
    after
      0 -> k
    end
  end

  def main(argv) do
    rc =
      case argv do
        ["stream", url, n, t] -> stream(url, String.to_integer(n), String.to_integer(t), false)
        ["paced", url, n, t, i | file] ->
          stream(url, String.to_integer(n), String.to_integer(t), true, String.to_integer(i), List.first(file))

        ["open", url, n] -> open(url, String.to_integer(n))
        _ -> IO.puts(:stderr, "usage: see the head of bench/llm_baseline.exs") && 2
      end

    at("exit", rc)
    System.halt(rc)
  end
end

LlmBase.main(System.argv())
