defmodule CouncilEx.NodeTest do
  use ExUnit.Case, async: false
  @moduletag :cnode
  # the C node itself (its process, distribution, the relay)
  @moduletag :cnode_only

  import CouncilEx.Test.Helpers
  alias CouncilEx.Test.{QuickCouncil, SlowCouncil}

  defp kill_node do
    os_pid = CouncilEx.Node.os_pid()
    assert is_integer(os_pid)
    {_, 0} = System.cmd("kill", ["-9", Integer.to_string(os_pid)])
    os_pid
  end

  test "the library started a distributed VM and the C node, which answers :ping" do
    assert Node.alive?()
    node = CouncilEx.node()
    assert is_atom(node) and node in (Node.list(:hidden) ++ Node.list())
    assert GenServer.call({:council_ex, node}, :ping) == :pong
    assert %{mode: :managed, status: :up, node: ^node} = CouncilEx.Node.info()
    assert {:error, {:unknown_call, :bogus}} = GenServer.call({:council_ex, node}, :bogus)
  end

  test "a killed C node is restarted under the same name" do
    old = CouncilEx.node()
    new = wait_restarted(kill_node())
    assert new == old
    assert GenServer.call({:council_ex, new}, :ping) == :pong
    assert CouncilEx.Node.info().restarts >= 1
  end

  test "kill -9 mid-run: callers get :noconnection, the node comes back, a new run completes" do
    Process.flag(:trap_exit, true)
    id = run_id()
    {:ok, pid} = CouncilEx.start_link(SlowCouncil, "q", run_id: id, subscribe: true)
    assert {:ok, _} = CouncilEx.RunIndex.lookup(pid)
    assert CouncilEx.PubSub.Relay.subscribers("council_ex:run:" <> id) == [self()]
    waiter = Task.async(fn -> CouncilEx.await(pid) end)
    # the await is under way at the node when it dies
    wait_calling(waiter.pid)
    old = kill_node()
    assert_receive {:EXIT, ^pid, :noconnection}, 15_000
    assert Task.await(waiter, 15_000) == {:error, :noconnection}
    # What the library kept for the run and its topic goes with the node.
    eventually(fn -> CouncilEx.RunIndex.lookup(pid) == :error end)
    eventually(fn -> CouncilEx.PubSub.Relay.subscribers("council_ex:run:" <> id) == [] end)
    wait_restarted(old)
    assert {:ok, %{final: _}} = CouncilEx.run(QuickCouncil, "after the crash", timeout: 30_000)
  end
end
