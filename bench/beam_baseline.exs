# bench/beam_baseline.exs - the BEAM side of `make bench`, in plain
# Elixir/OTP (no Mix, no deps). bench/run starts it as its own node:
#
#   elixir --sname bench_beam_N --cookie C bench/beam_baseline.exs
#
# It is the design CouncilEx replaces, written the way a careful Elixir
# developer would: a GenServer per run, registered in a unique Registry and
# started under a DynamicSupervisor; a registered service answering ping and
# whereis; an event emitter (for relay-style and per-pid fan-out); a mock
# council of plain GenServers and Tasks; and local microbenchmarks. The
# driver (bench/driver.exs) reaches all of it over distribution exactly as it
# reaches the C node. The node prints "beam_baseline ready" when it is up.

Code.require_file("procfs.exs", __DIR__)

defmodule BenchBeam do
  @moduledoc false
  def run_id, do: :crypto.strong_rand_bytes(16) |> Base.url_encode64(padding: false)

  # f called n times in a tight loop (the timed body of a microbenchmark;
  # bench/nif_case.exs times its batches with it too)
  def repeat(_f, 0), do: :ok

  def repeat(f, n) do
    f.()
    repeat(f, n - 1)
  end
end

defmodule BenchBeam.Run do
  @moduledoc false
  # One run: like the C node's run pid it holds a summary, answers :run_id
  # and :state, and has one member call in flight (a timer standing for the
  # mock member with latency_ms).
  use GenServer

  def start_link(%{run_id: id} = args),
    do: GenServer.start_link(__MODULE__, args, name: {:via, Registry, {BenchBeam.Registry, id}})

  @impl true
  def init(%{run_id: id} = args) do
    spec = Map.fetch!(args, :spec)
    [member | _] = spec["members"]
    latency = get_in(member, ["options", "latency_ms"]) || 0
    timer = Process.send_after(self(), {:member_done, member["id"]}, latency)

    {:ok,
     %{
       run_id: id,
       council: spec["id"],
       registry: "CouncilEx.Runner.Registry",
       status: :running,
       current_round: %{name: hd(spec["rounds"])["type"], idx: 0},
       rounds_completed: 0,
       started_at: System.os_time(:microsecond),
       input: Map.get(args, :input),
       timer: timer
     }}
  end

  @impl true
  def handle_call(:run_id, _from, s), do: {:reply, s.run_id, s}

  def handle_call(:state, _from, s),
    do:
      {:reply,
       {:ok,
        Map.take(s, [
          :run_id,
          :council,
          :registry,
          :status,
          :current_round,
          :rounds_completed,
          :started_at
        ])}, s}

  def handle_call(other, _from, s), do: {:reply, {:error, {:unknown_call, other}}, s}

  @impl true
  def handle_info({:member_done, _}, s), do: {:stop, :normal, s}
  def handle_info(_, s), do: {:noreply, s}
end

defmodule BenchBeam.Svc do
  @moduledoc false
  # Registered as :bench_svc: the counterpart of the C node's :council_ex
  # service for :ping and {:whereis, registry, run_id}.
  use GenServer

  def start_link(_), do: GenServer.start_link(__MODULE__, nil, name: :bench_svc)

  @impl true
  def init(nil), do: {:ok, nil}

  @impl true
  def handle_call(:ping, _from, s), do: {:reply, :pong, s}

  def handle_call({:whereis, _registry, run_id}, _from, s) do
    reply =
      case Registry.lookup(BenchBeam.Registry, run_id) do
        [{pid, _}] -> {:ok, pid}
        [] -> {:error, :unknown_run}
      end

    {:reply, reply, s}
  end

  def handle_call(other, _from, s), do: {:reply, {:error, {:unknown_call, other}}, s}
end

defmodule BenchBeam.Holder do
  @moduledoc false
  # Holds extra Registry keys (the lookup case at 1M keys): Registry.lookup
  # costs the same whatever process a key points to, and 1M run processes
  # would only add minutes and gigabytes to the baseline's setup.
  def fill(n, parts) do
    per = div(n + parts - 1, parts)

    1..parts
    |> Enum.map(fn p ->
      parent = self()

      pid =
        spawn(fn ->
          from = (p - 1) * per
          to = min(n, p * per) - 1

          if to >= from,
            do:
              for(
                i <- from..to,
                do: Registry.register(BenchBeam.Registry, "hold-" <> Integer.to_string(i), nil)
              )

          send(parent, {:filled, self()})
          receive do: (:stop -> :ok)
        end)

      receive do: ({:filled, ^pid} -> pid)
    end)
  end

  def count, do: Registry.count(BenchBeam.Registry)
end

defmodule BenchBeam.Fanout do
  @moduledoc false
  # Emits the event sequence of `runs` runs with `tokens` member_token events
  # each, the same tuples (and sizes, 22-byte run ids) the C node sends.
  # tagged: true (the relay design) sends each event once to the relay pid
  # wrapped as {:council_ex_event, topic, event}, as the C node does for the
  # library's relay (and as Phoenix.PubSub wraps its per-node forward);
  # tagged: false sends each plain event to every target pid.
  def emit(targets, runs, tokens, chunk, tagged) do
    for _ <- 1..runs do
      id = BenchBeam.run_id()
      topic = "council_ex:run:" <> id
      t = {targets, if(tagged, do: topic, else: nil)}
      {before, token, after_} = run_events(id, chunk, tokens)
      Enum.each(before, &send_all(t, &1))
      tok(t, token, tokens)
      Enum.each(after_, &send_all(t, &1))
    end

    :ok
  end

  # The events of one run of one member in one round, as the C node sends
  # them: {the events before the member's tokens, its token event (sent
  # `tokens` times), the events after}. bench/nif_case.exs sends the same.
  def run_events(id, chunk, tokens) do
    text = :binary.copy(chunk, tokens)
    mr = %{member_id: "a", status: :ok, text: text, attempts: 1, error: nil, parsed: nil}

    rr = %{
      name: "independent_analysis",
      idx: 0,
      type: "independent_analysis",
      members: [mr],
      aggregate: nil,
      text: nil
    }

    {[
       {:run_started, id, "bench", "x"},
       {:round_started, id, "independent_analysis", 0},
       {:member_started, id, "independent_analysis", "a"}
     ], {:member_token, id, "independent_analysis", "a", chunk},
     [
       {:member_completed, id, "independent_analysis", "a", mr},
       {:round_completed, id, "independent_analysis", rr},
       {:run_completed, id, %{final: text, rounds: [rr], errors: []}}
     ]}
  end

  defp tok(_t, _token, 0), do: :ok

  defp tok(t, token, n) do
    send_all(t, token)
    tok(t, token, n - 1)
  end

  defp send_all({[pid], nil}, msg), do: send(pid, msg)
  defp send_all({[pid], topic}, msg), do: send(pid, {:council_ex_event, topic, msg})
  defp send_all({ts, nil}, msg), do: Enum.each(ts, &send(&1, msg))
  defp send_all({ts, topic}, msg), do: Enum.each(ts, &send(&1, {:council_ex_event, topic, msg}))
end

defmodule BenchBeam.Council do
  @moduledoc false
  # A mock council run as plain GenServer + Tasks: rounds in order, members
  # of a round concurrently (one Task each), answers composed like the C
  # mock provider, votes parsed ("VOTE: <label>") and tallied, then the
  # chair's synthesis. :await replies when the run has finished.
  use GenServer

  def start_link(args), do: GenServer.start_link(__MODULE__, args)

  @impl true
  def init(%{spec: spec, input: input}) do
    {:ok, %{spec: spec, input: input, result: nil, waiting: []}, {:continue, :run}}
  end

  @impl true
  def handle_continue(:run, s) do
    {:noreply, %{s | result: run(s.spec, s.input)} |> flush()}
  end

  @impl true
  def handle_call(:await, from, %{result: nil} = s),
    do: {:noreply, %{s | waiting: [from | s.waiting]}}

  def handle_call(:await, _from, s), do: {:stop, :normal, {:ok, s.result}, s}

  defp flush(%{waiting: []} = s), do: s

  defp flush(s) do
    Enum.each(s.waiting, &GenServer.reply(&1, {:ok, s.result}))
    %{s | waiting: []}
  end

  def run(spec, input) do
    members = Enum.map(spec["members"], & &1["id"])
    labels = members |> Enum.with_index() |> Enum.map(fn {_, i} -> <<?A + i>> end)

    {rounds, latest} =
      spec["rounds"]
      |> Enum.with_index()
      |> Enum.reduce({[], %{}}, fn {round, idx}, {acc, latest} ->
        type = round["type"]

        answers =
          for {m, l} <- Enum.zip(members, labels),
              Map.has_key?(latest, m),
              do: %{label: l, member_id: m, text: latest[m]}

        results =
          members
          |> Enum.map(fn m ->
            Task.async(fn -> member_call(m, type, idx, input, answers, labels) end)
          end)
          |> Task.await_many(60_000)

        aggregate = if type == "vote", do: tally(results, labels, members), else: nil
        rr = %{name: type, idx: idx, type: type, members: results, aggregate: aggregate, text: nil}
        latest = if type == "vote", do: latest, else: Map.new(results, &{&1.member_id, &1.text})
        {[rr | acc], latest}
      end)

    chair = spec["chair"]
    idx = length(rounds)

    answers =
      for {m, l} <- Enum.zip(members, labels), do: %{label: l, member_id: m, text: latest[m]}

    final =
      Task.async(fn -> member_call(chair, "synthesis", idx, input, answers, labels) end)
      |> Task.await(60_000)

    synth = %{
      name: "synthesis",
      idx: idx,
      type: "synthesis",
      members: [final],
      aggregate: nil,
      text: final.text
    }

    %{final: final.text, rounds: Enum.reverse([synth | rounds]), errors: []}
  end

  defp member_call(m, type, idx, input, answers, _labels) do
    text =
      case type do
        "vote" ->
          pick =
            case answers do
              [a | _] -> a.label
              [] -> "?"
            end

          "VOTE: #{pick}\n(#{m}, #{type} ##{idx})"

        _ ->
          base =
            "#{m}: #{type} ##{idx} attempt 1 on \"#{binary_part(input, 0, min(byte_size(input), 200))}\""

          n = length(answers)

          if n > 0,
            do: base <> " having read #{n} answer#{if n == 1, do: "", else: "s"}",
            else: base
      end

    parsed = if type == "vote", do: parse_vote(text), else: nil
    %{member_id: m, status: :ok, text: text, attempts: 1, error: nil, parsed: parsed}
  end

  defp parse_vote(text) do
    case :binary.match(text, "VOTE:") do
      {p, l} ->
        rest = binary_part(text, p + l, byte_size(text) - p - l) |> String.trim_leading()
        [label | _] = String.split(rest, ~r/[^A-Za-z0-9]/, parts: 2)
        %{"vote" => String.upcase(label)}

      :nomatch ->
        nil
    end
  end

  defp tally(results, labels, members) do
    t = Enum.reduce(results, %{}, fn r, acc -> Map.update(acc, r.parsed["vote"], 1, &(&1 + 1)) end)
    {winner, _} = Enum.max_by(Enum.sort(t), fn {_, c} -> c end)
    wm = Enum.zip(labels, members) |> Map.new() |> Map.get(winner)
    %{"tally" => t, "winner" => winner, "winner_member" => wm}
  end
end

defmodule BenchBeam.Micro do
  @moduledoc false
  # Local microbenchmarks (inside this node): the BEAM counterparts of the
  # native API figures. Returns medians and p99 of per-batch means in ns.
  @batch 1000

  def run(n_batches) do
    # the registries below link to this process: stopping them must not
    # take it down
    Process.flag(:trap_exit, true)

    {:ok, runp} = BenchBeam.Run.start_link(%{run_id: BenchBeam.run_id(), spec: spec(), input: "x"})

    state = batches(n_batches, fn -> GenServer.call(runp, :state) end)

    # Registry.lookup at 1k keys and (by the caller's choice) more: use the
    # local-only registry BenchBeam.LookupReg, filled by holders.
    {:ok, preg} = Registry.start_link(keys: :duplicate, name: BenchBeam.PubReg)
    Process.unlink(preg)
    Registry.register(BenchBeam.PubReg, "t", nil)
    # publish to 1 subscriber, PubSub-style: Registry.dispatch + send; the
    # subscriber is this process, so the message is also received (delivery)
    publish =
      batches(n_batches, fn ->
        Registry.dispatch(BenchBeam.PubReg, "t", fn entries ->
          for {pid, _} <- entries, do: send(pid, :ev)
        end)

        receive do: (:ev -> :ok)
      end)

    Supervisor.stop(preg)
    GenServer.stop(runp)
    %{state: state, publish: publish}
  end

  def lookup(n_keys, n_batches) do
    Process.flag(:trap_exit, true)
    name = :"Elixir.BenchBeam.LookupReg#{n_keys}"
    {:ok, reg} = Registry.start_link(keys: :unique, name: name)
    Process.unlink(reg)
    parts = 8
    per = div(n_keys + parts - 1, parts)
    parent = self()

    holders =
      for p <- 1..parts do
        spawn(fn ->
          from = (p - 1) * per
          to = min(n_keys, p * per) - 1
          if to >= from, do: for(i <- from..to, do: Registry.register(name, key(i), nil))
          send(parent, {:filled, self()})
          receive do: (:stop -> :ok)
        end)
      end

    for h <- holders, do: receive(do: ({:filled, ^h} -> :ok))
    # every key in random order (as bench_core does): batch k looks up
    # keys k*1000 .. k*1000+999 (mod n), so big tables are not cache-hot
    keys = 0..(n_keys - 1) |> Enum.map(&key/1) |> Enum.shuffle() |> List.to_tuple()
    res = batches_keys(n_batches, name, keys)
    Enum.each(holders, &send(&1, :stop))
    Supervisor.stop(reg)
    res
  end

  defp key(i), do: "bench-run-" <> Integer.to_string(i * 7919 + 17)

  defp batches_keys(n, name, keys) do
    m = tuple_size(keys)

    means =
      for k <- 0..(n - 1) do
        base = rem(k * @batch, m)
        t0 = System.monotonic_time(:nanosecond)
        look(name, keys, m, base, 0)
        (System.monotonic_time(:nanosecond) - t0) / @batch
      end

    summarize(means)
  end

  defp look(_name, _keys, _m, _base, @batch), do: :ok

  defp look(name, keys, m, base, i) do
    [_] = Registry.lookup(name, elem(keys, rem(base + i, m)))
    look(name, keys, m, base, i + 1)
  end

  defp batches(n, f) do
    for(_ <- 1..3, do: f.())

    means =
      for _ <- 1..n do
        t0 = System.monotonic_time(:nanosecond)
        BenchBeam.repeat(f, @batch)
        (System.monotonic_time(:nanosecond) - t0) / @batch
      end

    summarize(means)
  end


  defp summarize(means) do
    s = Enum.sort(means)
    n = length(s)

    %{
      median: Enum.at(s, div(n, 2)),
      p99: Enum.at(s, min(n - 1, round(0.99 * (n - 1)))),
      mean: Enum.sum(s) / n,
      batches: n
    }
  end

  def spec,
    do: %{
      "id" => "bench",
      "members" => [%{"id" => "a", "provider" => "mock", "options" => %{"latency_ms" => 600_000}}],
      "rounds" => [%{"type" => "independent_analysis"}]
    }
end

defmodule BenchBeam.Info do
  @moduledoc false
  def rss_kb, do: Bench.Procfs.rss_kb()

  def memory, do: :erlang.memory(:total)
  def os_pid, do: System.pid()
  def sched_on, do: Bench.Procfs.sched_on()
  def sched_times, do: Bench.Procfs.sched_times()
  def run_count, do: DynamicSupervisor.count_children(BenchBeam.RunSup).active

  def stop_runs do
    for {_, pid, _, _} <- DynamicSupervisor.which_children(BenchBeam.RunSup),
        do: DynamicSupervisor.terminate_child(BenchBeam.RunSup, pid)

    :ok
  end
end

{:ok, _} =
  Supervisor.start_link(
    [
      {Registry, keys: :unique, name: BenchBeam.Registry},
      {DynamicSupervisor, strategy: :one_for_one, name: BenchBeam.RunSup, max_children: :infinity},
      {DynamicSupervisor, strategy: :one_for_one, name: BenchBeam.CouncilSup},
      BenchBeam.Svc
    ],
    strategy: :one_for_one,
    name: BenchBeam.Sup
  )

IO.puts("beam_baseline ready #{node()}")
Process.sleep(:infinity)
