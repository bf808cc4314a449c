# bench/etf_decode.exs - the NIF's decode of its own ETF (c_src/nif/nif_term.c),
# per term, the two ways: the one-walk decoder of the library's own terms
# (nif_etf_own, its atom cache warm) and the path before it (nif_etf_term:
# enif_binary_to_term of the whole term), alternated decode by decode on a
# dirty CPU scheduler (CouncilEx.Nif.etf_bench):
#
#   elixir bench/etf_decode.exs [N]
#
# The terms are real ones: the reply to {:result, ...} of the bench's mock
# council (bench/driver.exs council_spec_json: 3 members, 3 rounds, chair)
# and two of its events (a member_completed and the run_completed), each as
# term_to_binary gives it (the same tags as the core's ei encoders).
# Prints "@ key value" lines: <term>_bytes, <term>_fast_ns, <term>_before_ns.

n = String.to_integer(List.first(System.argv()) || "20000")
root = Path.expand("..", __DIR__)

{:ok, _, _} =
  Kernel.ParallelCompiler.compile([
    Path.join(root, "lib/council_ex/backend.ex"),
    Path.join(root, "lib/council_ex/nif/run.ex"),
    Path.join(root, "lib/council_ex/nif.ex")
  ])

:ok = CouncilEx.Nif.ensure_loaded()
:ok = CouncilEx.Nif.call({:open, %{}})

spec =
  ~s({"id":"bench_council","members":[{"id":"a","provider":"mock"},{"id":"b","provider":"mock"},) <>
    ~s({"id":"c","provider":"mock"}],"rounds":[{"type":"independent_analysis"},{"type":"peer_review"},) <>
    ~s({"type":"vote"}],"chair":"a"})

id = :crypto.strong_rand_bytes(16) |> Base.url_encode64(padding: false)
{:ok, _pid} = CouncilEx.Nif.start(%{spec: spec, input: "x", run_id: id, subscribe: [self()]})

completed =
  receive do
    {:run_completed, ^id, _} = e -> e
  after
    10_000 -> raise "no run_completed"
  end

{:messages, msgs} = Process.info(self(), :messages)
member = Enum.find(msgs, &match?({:member_completed, ^id, _, _, _}, &1)) || raise "no member_completed"
{:ok, _} = result = CouncilEx.Nif.call({:result, "CouncilEx.Runner.Registry", id})

for {name, term} <- [result: result, member_completed: member, run_completed: completed] do
  bin = :erlang.term_to_binary(term)
  # warm-up, then the measured decodes
  CouncilEx.Nif.etf_bench(bin, 1000)
  {fast, before} = CouncilEx.Nif.etf_bench(bin, n)
  IO.puts("@ #{name}_bytes #{byte_size(bin)}")
  IO.puts("@ #{name}_fast_ns #{:erlang.float_to_binary(fast, decimals: 1)}")
  IO.puts("@ #{name}_before_ns #{:erlang.float_to_binary(before, decimals: 1)}")
end
