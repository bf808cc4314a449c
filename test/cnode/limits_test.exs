# The core's limits set from the C node's command line, seen over
# distribution: too many runs, the retention window, the spec size cap;
# and bad option values refused before the node starts.
Code.require_file("support.exs", __DIR__)

defmodule CNode.LimitsTest do
  use ExUnit.Case, async: false
  import CNodeTest

  setup_all do
    # retention 5 s: the finished run must still be there for the two calls
    # that follow its terminal event, even on a loaded machine
    info = start_node(args: ["--max-runs", "1", "--retention-ms", "5000",
                             "--max-spec-bytes", "400"])
    on_exit(fn -> stop_node(info) end)
    {:ok, info: info}
  end

  @reg "CouncilEx.Runner.Registry"
  @quick %{id: "q", members: [%{id: "a", provider: "mock"}],
           rounds: [%{type: "independent_analysis"}]}
  @slow %{id: "s", members: [%{id: "a", provider: "mock", options: %{latency_ms: 600_000}}],
          rounds: [%{type: "independent_analysis"}]}

  defp svc(i), do: {:council_ex, i.node}
  defp start(i, opts), do: GenServer.call(svc(i), {:start, Map.merge(%{input: "q"}, opts)})

  test "--max-runs: a start past the limit gets {:error, :limit}; a slot frees when a run ends",
       %{info: i} do
    {:ok, pid} = start(i, %{spec: @slow})
    assert start(i, %{spec: @quick}) == {:error, :limit}
    assert GenServer.call(pid, :cancel) == :ok
    assert wait_until(fn -> match?({:ok, _}, start(i, %{spec: @quick})) end)
  end

  test "--retention-ms: a finished run is readable, then gone", %{info: i} do
    id = "ret-#{System.unique_integer([:positive])}"
    assert wait_until(fn -> match?({:ok, _}, start(i, %{spec: @quick, run_id: id,
                                                          subscribe: [self()]})) end)
    assert {:run_completed, ^id, %{final: f}} = List.last(events())
    assert {:ok, %{status: :completed}} = GenServer.call(svc(i), {:state, @reg, id})
    assert {:ok, %{final: ^f}} = GenServer.call(svc(i), {:result, @reg, id})
    assert wait_until(fn -> GenServer.call(svc(i), {:state, @reg, id}) == {:error, :not_found} end,
                      30_000)
    assert GenServer.call(svc(i), {:whereis, @reg, id}) == {:error, :unknown_run}
  end

  test "--max-spec-bytes: a bigger spec gets {:error, :request_too_large}, the node keeps serving",
       %{info: i} do
    big = Map.put(@quick, :members, for(k <- 1..20, do: %{id: "member-#{k}", provider: "mock"}))
    assert start(i, %{spec: big}) == {:error, :request_too_large}
    assert start(i, %{spec: ~s({"id": "#{String.duplicate("x", 500)}"})}) ==
             {:error, :request_too_large}
    assert GenServer.call(svc(i), :ping) == :pong
  end

  test "a member with a provider the node does not have: the error names the field", %{info: i} do
    spec = %{id: "p", members: [%{id: "a", provider: "mock"}, %{id: "b", provider: "gpt-9"}],
             rounds: [%{type: "independent_analysis"}]}
    assert {:error, {:invalid_spec, "members[1].provider", why}} = start(i, %{spec: spec})
    assert why =~ ~s("gpt-9")
  end

  test "bad limit values are refused with a message and exit status 2" do
    exe = Path.expand(binary())
    for args <- [["--retention-ms", "0"], ["--max-retained", "-3"], ["--output-cap", "lots"],
                 ["--subscriber-queue"]] do
      {out, st} = System.cmd(exe, ["--sname", "never"] ++ args, stderr_to_stdout: true)
      assert st == 2, inspect({args, out})
      assert out =~ "council_node: ", out
    end
  end
end
