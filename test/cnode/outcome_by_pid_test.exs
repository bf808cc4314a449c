# The outcome of a run read by the pid it had ({:outcome_by_pid, pid},
# docs/protocol.md), for as long as the node retains the run, and the
# Erlang client's await on a run that has ended (src/council_ex_raw.erl,
# compiled here from source).
Code.require_file("support.exs", __DIR__)

# the Erlang client as rebar3 would build it (include/ holds the header
# make writes), loaded before the tests that call it are compiled
{:ok, :council_ex_raw, bin} =
  :compile.file(~c"src/council_ex_raw.erl", [:binary, :return_errors, {:i, ~c"include"}])
{:module, :council_ex_raw} = :code.load_binary(:council_ex_raw, ~c"council_ex_raw.erl", bin)

defmodule CNode.OutcomeByPidTest do
  use ExUnit.Case, async: false
  import CNodeTest

  @mock %{id: "m", members: [%{id: "a", provider: "mock"}, %{id: "b", provider: "mock"}],
          rounds: [%{type: "independent_analysis"}]}
  @slow %{id: "slow", members: [%{id: "a", provider: "mock", options: %{latency_ms: 600_000}}],
          rounds: [%{type: "independent_analysis"}]}

  defp start(node, opts),
    do: GenServer.call({:council_ex, node}, {:start, Map.merge(%{input: "2+2?"}, opts)})

  defp outcome(node, pid), do: GenServer.call({:council_ex, node}, {:outcome_by_pid, pid})

  # A run started with a monitor on it, waited until its process is gone;
  # returns {pid, the terminal event}.
  defp ended_run(node, spec, fun \\ fn _ -> :ok end) do
    {:ok, pid} = start(node, %{spec: spec, subscribe: [self()]})
    ref = Process.monitor(pid)
    fun.(pid)
    ev = List.last(events())
    assert_receive {:DOWN, ^ref, :process, ^pid, _}, 20_000
    {pid, ev}
  end

  setup_all do: module_node()

  test "an ended run's outcome by the pid it had: completed, cancelled, failed", %{info: i} do
    {pid, {:run_completed, _, result}} = ended_run(i.node, @mock)
    assert outcome(i.node, pid) == {:ok, result}
    # the pid itself is gone, as before
    assert {:noproc, _} = catch_exit(GenServer.call(pid, :await, 5_000))

    {pid, {:run_cancelled, _, result}} =
      ended_run(i.node, @slow, &assert(GenServer.call(&1, :cancel) == :ok))
    assert outcome(i.node, pid) == {:error, {:cancelled, result}}

    failing = %{@mock | members: [%{id: "a", provider: "mock",
                                    options: %{fail_attempts: [1, 2, 3]}}]}
    {pid, {:run_failed, _, errors, result}} =
      ended_run(i.node, Map.put(failing, :limits, %{retry: %{max_attempts: 1}}))
    assert outcome(i.node, pid) == {:error, {:failed, errors, result}}
  end

  test "a live run answers as its :result; other pids are not found", %{info: i} do
    {:ok, pid} = start(i.node, %{spec: @slow})
    assert outcome(i.node, pid) == {:error, :running}
    assert GenServer.call(pid, :cancel) == :ok
    assert outcome(i.node, self()) == {:error, :not_found}
    # a process of the node that is no run (the first one spawned: net_kernel)
    assert outcome(i.node, make_pid(i.node, 1, i.creation)) == {:error, :not_found}
    # a pid of the node's name but another creation (an earlier incarnation)
    assert outcome(i.node, make_pid(i.node, 1_000_000, i.creation + 1)) == {:error, :not_found}
    assert outcome(i.node, :not_a_pid) == {:error, :badarg}
  end

  test "council_ex_raw:await answers an ended run with its outcome", %{info: i} do
    {:ok, pid} = :council_ex_raw.start(i.node, %{spec: @mock, input: "2+2?"})
    assert {:ok, %{final: _} = result} = :council_ex_raw.await(pid)
    # ended now: the same outcome, from the node's retention
    ref = Process.monitor(pid)
    assert_receive {:DOWN, ^ref, :process, ^pid, _}, 20_000
    assert :council_ex_raw.await(pid) == {:ok, result}
    assert :council_ex_raw.await(pid, 5_000) == {:ok, result}
    assert :council_ex_raw.run_call(pid, :await) == {:ok, result}
    assert :council_ex_raw.run_call(pid, :await, 5_000) == {:ok, result}
    # other calls on the ended pid still say noproc
    assert :council_ex_raw.run_call(pid, :state) == {:error, :noproc}

    {pid, {:run_cancelled, _, result}} =
      ended_run(i.node, @slow, &assert(:council_ex_raw.run_call(&1, :cancel) == :ok))
    assert :council_ex_raw.await(pid) == {:error, {:cancelled, result}}
  end

  test "pids are remembered as long as their runs are retained, within --max-retained" do
    info = start_node(args: ["--retention-ms", "2000", "--max-retained", "2"])
    try do
      runs = for _ <- 1..3, do: ended_run(info.node, @mock)
      [{first, _}, {second, {:run_completed, _, r2}}, {third, {:run_completed, _, r3}}] = runs
      # the core keeps two finished runs: the first has left, with its pid
      assert outcome(info.node, first) == {:error, :not_found}
      assert :council_ex_raw.await(first) == {:error, :noproc}
      assert outcome(info.node, second) == {:ok, r2}
      assert outcome(info.node, third) == {:ok, r3}
      # retention passes: every pid is forgotten
      assert wait_until(fn -> outcome(info.node, third) == {:error, :not_found} end, 30_000)
      assert outcome(info.node, second) == {:error, :not_found}
      assert :council_ex_raw.await(third) == {:error, :noproc}
    after
      stop_node(info)
    end
  end
end
