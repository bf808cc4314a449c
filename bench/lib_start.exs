# bench/lib_start.exs - the "libstart" case of `make bench`
# (bench/libstart_case.exs), in a fresh OS process:
#
#   elixir --sname NAME bench/lib_start.exs N REPS
#
# What a user's CouncilEx.start(Module, input) costs, with the library's
# application running as a project that depends on it runs it: lib/ is
# compiled here (into a temporary directory, with priv/ linked beside it),
# the application is started with backend :nif, then again with backend
# :node (a C node the library starts and manages itself, priv/council_node,
# with its default arguments), and each time one caller makes, alternating
# batches of N sequential starts (REPS times, after a warm-up):
#
#   lib   CouncilEx.start(Module, "x")         a council module (use CouncilEx)
#   spec  CouncilEx.start(%CouncilEx.Spec{}, "x")   the same council as a spec
#   raw   the backend's own start of the same run from its JSON, what the
#         start rows measure: CouncilEx.Nif.start/1, or GenServer.call to
#         the C node's :council_ex service with {:start, map}
#   beam  the baseline's start: bench/beam_baseline.exs's BenchBeam.Run under
#         a local DynamicSupervisor, registered in a unique Registry (as the
#         "nif" case's starts row)
#
# Every run is an idle one (one mock member waiting 10 minutes); each
# batch's runs are cancelled (the baseline's terminated) after it, untimed.
# Prints "@ <backend>_<series>_<stat> value"
# lines (ns): median, p99 and mean of all the starts timed, and the median
# of each repetition's median (repmed_min, repmed_max: the spread).

[n, reps] = Enum.map(System.argv(), &String.to_integer/1)
root = Path.expand("..", __DIR__)

# ---- the library, compiled as a dependency would be
tmp = Path.join(System.tmp_dir!(), "council_libstart_#{System.pid()}_#{Base.encode16(:crypto.strong_rand_bytes(4))}")
ebin = Path.join(tmp, "ebin")
File.mkdir_p!(ebin)
:ok = File.ln_s(Path.join(root, "priv"), Path.join(tmp, "priv"))
System.at_exit(fn _ -> File.rm_rf(tmp) end)

files = [Path.join(root, "lib/council_ex.ex") | Path.wildcard(Path.join(root, "lib/council_ex/**/*.ex"))]
{:ok, modules, _} = Kernel.ParallelCompiler.compile_to_path(files, ebin)

app =
  {:application, :council_ex,
   [
     description: ~c"council_ex (bench/lib_start.exs)",
     vsn: ~c"0.1.0",
     modules: modules,
     registered: [],
     applications: [:kernel, :stdlib, :elixir, :logger, :crypto],
     mod: {CouncilEx.Application, []}
   ]}

File.write!(Path.join(ebin, "council_ex.app"), :io_lib.format(~c"~p.~n", [app]))
true = Code.prepend_path(ebin)
Logger.configure(level: :warning)

# ---- the council, as a module and as a spec
Code.compile_string("""
defmodule LibStart.Idle do
  use CouncilEx
  member :a, provider: :mock, latency_ms: 600_000
  round :independent_analysis
  limits member_timeout_ms: 3_600_000
end
""")

spec = LibStart.Idle.__council__()

json =
  ~s({"id":"bench","members":[{"id":"a","provider":"mock","options":{"latency_ms":600000}}],) <>
    ~s("rounds":[{"type":"independent_analysis"}],"limits":{"member_timeout_ms":3600000}})

spec_map = %{
  "id" => "bench",
  "members" => [%{"id" => "a", "provider" => "mock", "options" => %{"latency_ms" => 600_000}}],
  "rounds" => [%{"type" => "independent_analysis"}],
  "limits" => %{"member_timeout_ms" => 3_600_000}
}

# ---- the baseline's run (BenchBeam.Run of bench/beam_baseline.exs), local
path = Path.join(root, "bench/beam_baseline.exs")
{:__block__, _, forms} = Code.string_to_quoted!(File.read!(path), file: path)
[run] = for {:defmodule, _, [{:__aliases__, _, [:BenchBeam, :Run]}, _]} = f <- forms, do: f
Code.compile_quoted(run, path)
{:ok, _} = Registry.start_link(keys: :unique, name: BenchBeam.Registry)
{:ok, _} = DynamicSupervisor.start_link(strategy: :one_for_one, name: BenchBeam.RunSup)

beam = fn ->
  DynamicSupervisor.start_child(BenchBeam.RunSup, %{
    id: BenchBeam.Run,
    start: {BenchBeam.Run, :start_link, [%{run_id: CouncilEx.generate_run_id(), spec: spec_map, input: "x"}]},
    restart: :temporary
  })
end

# ---- timing
# k starts by f: {ns per start, the runs' pids}
timed = fn f, k ->
  Enum.map_reduce(1..k, [], fn _, pids ->
    t0 = System.monotonic_time(:nanosecond)
    {:ok, pid} = f.()
    t = System.monotonic_time(:nanosecond) - t0
    true = is_pid(pid)
    {t, [pid | pids]}
  end)
end

# the runs go, untimed, so that every batch starts among as many live runs
stop = fn
  "beam", pids -> for p <- pids, do: DynamicSupervisor.terminate_child(BenchBeam.RunSup, p)
  _ours, pids -> for p <- pids, do: :ok = CouncilEx.cancel(p)
end

stat = fn samples ->
  s = Enum.sort(samples)
  k = length(s)
  %{median: Enum.at(s, div(k, 2)), p99: Enum.at(s, min(k - 1, trunc(k * 0.99))), mean: Enum.sum(s) / k}
end

measure = fn backend, series ->
  for {name, f} <- series, do: stop.(name, elem(timed.(f, max(div(n, 4), 10)), 1))

  per_rep =
    for _ <- 1..reps do
      for {name, f} <- series do
        {samples, pids} = timed.(f, n)
        stop.(name, pids)
        {name, samples}
      end
    end

  for {name, _} <- series do
    all = for rep <- per_rep, {^name, s} <- rep, do: s
    meds = Enum.map(all, &stat.(&1).median) |> Enum.sort()
    st = stat.(List.flatten(all))

    for {k, v} <- [
          median: st.median,
          p99: st.p99,
          mean: st.mean,
          repmed_min: hd(meds),
          repmed_max: List.last(meds)
        ],
        do: IO.puts("@ #{backend}_#{name}_#{k} #{v * 1.0}")
  end
end

limits = [max_runs: 2_000_000, max_retained: 1_000_000]
Application.put_env(:council_ex, :nif_limits, limits)
Application.put_env(:council_ex, :node_args, ["--max-runs", "2000000"])

for backend <- [:nif, :node] do
  Application.put_env(:council_ex, :backend, backend)
  {:ok, _} = Application.ensure_all_started(:council_ex)

  raw =
    case backend do
      :nif ->
        fn -> CouncilEx.Nif.start(%{spec: json, input: "x", run_id: CouncilEx.generate_run_id()}) end

      :node ->
        {:ok, node} = CouncilEx.Node.await()
        svc = {:council_ex, node}
        fn -> GenServer.call(svc, {:start, %{spec: json, input: "x", run_id: CouncilEx.generate_run_id()}}) end
    end

  measure.(backend, [
    {"lib", fn -> CouncilEx.start(LibStart.Idle, "x") end},
    {"spec", fn -> CouncilEx.start(spec, "x") end},
    {"raw", raw},
    {"beam", beam}
  ])

  # (the NIF's context is closed, the managed C node stopped)
  :ok = Application.stop(:council_ex)
end
