# bench/nif_memory.exs - memory per idle run of one side of the "nif" case
# (bench/nif_case.exs), in a fresh OS process:
#
#   elixir bench/nif_memory.exs nif|beam N
#
# Starts N idle runs (one mock member waiting 10 minutes) and prints, as
# "@ key value" lines: rss_bytes_per_run (VmRSS growth / N: the VM and, for
# the NIF, the core's native memory), vm_bytes_per_run (erlang:memory
# growth / N), pid_bytes (process_info memory of one run's process) and
# where the VM's part went: alloc_<allocator> (the growth of the blocks
# ERTS's allocators hand out, per run: fix_alloc holds process structs,
# eheap_alloc heaps, binary_alloc binaries and NIF resources, std_alloc
# monitors and links, driver_alloc enif_alloc's blocks, ets_alloc ETS).
# RSS less erlang:memory is, for the NIF, mostly malloc's memory (the
# core's and the NIF's records) with ERTS's carrier overhead.
# nif: the library's CouncilEx.Nif in this VM; beam: bench/beam_baseline.exs's
# BenchBeam.Run under a DynamicSupervisor and a unique Registry.

[side, n] = System.argv()
n = String.to_integer(n)
root = Path.expand("..", __DIR__)

spec_json =
  ~s({"id":"bench","members":[{"id":"a","provider":"mock","options":{"latency_ms":600000}}],) <>
    ~s("rounds":[{"type":"independent_analysis"}],"limits":{"member_timeout_ms":3600000}})

rss = fn ->
  [_, kb] = Regex.run(~r/VmRSS:\s+(\d+)/, File.read!("/proc/self/status"))
  String.to_integer(kb) * 1024
end

id = fn -> :crypto.strong_rand_bytes(16) |> Base.url_encode64(padding: false) end

# bytes in the blocks of each of ERTS's allocators (every instance, multi-
# and single-block carriers; OTP 25 gives them per block type)
allocators = fn ->
  blocks = fn props ->
    Enum.sum(
      for c <- [:mbcs, :sbcs],
          p = Keyword.get(props, c, []),
          is_list(p),
          {:blocks, types} <- p,
          is_list(types),
          {_type, bp} <- types,
          is_list(bp),
          {:size, v, _, _} <- bp,
          do: v
    )
  end

  for a <- :erlang.system_info(:alloc_util_allocators), into: %{} do
    info = :erlang.system_info({:allocator, a})
    instances = if is_list(info), do: for({:instance, _, props} <- info, do: props), else: []
    {a, Enum.sum(for p <- instances, do: blocks.(p))}
  end
end

start =
  case side do
    "nif" ->
      {:ok, _, _} =
        Kernel.ParallelCompiler.compile([
          Path.join(root, "lib/council_ex/nif/run.ex"),
          Path.join(root, "lib/council_ex/nif.ex")
        ])

      :ok = CouncilEx.Nif.ensure_loaded()
      :ok = CouncilEx.Nif.call({:open, %{max_runs: n + 1000}})
      # the first runs size the core's tables
      for _ <- 1..100, do: {:ok, _} = CouncilEx.Nif.start(%{spec: spec_json, input: "x"})
      fn -> CouncilEx.Nif.start(%{spec: spec_json, input: "x", run_id: id.()}) end

    "beam" ->
      path = Path.join(root, "bench/beam_baseline.exs")
      {:__block__, _, forms} = Code.string_to_quoted!(File.read!(path), file: path)

      for {:defmodule, _, [{:__aliases__, _, parts}, _]} = form <- forms,
          Module.concat(parts) in [BenchBeam, BenchBeam.Run],
          do: Code.compile_quoted(form, path)

      {:ok, _} =
        Supervisor.start_link(
          [
            {Registry, keys: :unique, name: BenchBeam.Registry},
            {DynamicSupervisor,
             strategy: :one_for_one, name: BenchBeam.RunSup, max_children: :infinity}
          ],
          strategy: :one_for_one
        )

      spec = %{
        "id" => "bench",
        "members" => [
          %{"id" => "a", "provider" => "mock", "options" => %{"latency_ms" => 600_000}}
        ],
        "rounds" => [%{"type" => "independent_analysis"}]
      }

      go = fn ->
        DynamicSupervisor.start_child(BenchBeam.RunSup, %{
          id: BenchBeam.Run,
          start: {BenchBeam.Run, :start_link, [%{run_id: id.(), spec: spec, input: "x"}]},
          restart: :temporary
        })
      end

      for _ <- 1..100, do: {:ok, _} = go.()
      go
  end

:erlang.garbage_collect()
Process.sleep(500)
{rss0, vm0, al0} = {rss.(), :erlang.memory(:total), allocators.()}
pids = for _ <- 1..n, do: elem({:ok, _} = start.(), 1)
# the NIF's run pids hibernate from their start
Process.sleep(1000)
:erlang.garbage_collect()
{rss1, vm1, al1} = {rss.(), :erlang.memory(:total), allocators.()}
{:memory, pid_bytes} = Process.info(hd(pids), :memory)
# one decimal, never in exponent form (at_lines reads digits and a point)
per = fn bytes -> :erlang.float_to_binary(bytes / n, decimals: 1) end
IO.puts("@ rss_bytes_per_run #{per.(rss1 - rss0)}")
IO.puts("@ vm_bytes_per_run #{per.(vm1 - vm0)}")
IO.puts("@ pid_bytes #{pid_bytes}.0")

for {a, b1} <- al1,
    b1 != Map.get(al0, a, 0),
    do: IO.puts("@ alloc_#{a} #{per.(b1 - Map.get(al0, a, 0))}")
