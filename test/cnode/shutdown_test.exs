# Stopping the C node: GenServer.stop on a process, then SIGTERM.
Code.require_file("support.exs", __DIR__)

defmodule CNode.ShutdownTest do
  use ExUnit.Case, async: false
  import CNodeTest

  test "GenServer.stop ends the service with the reason; calls then exit :noproc" do
    i = start_node()
    svc = make_pid(i.node, 2, i.creation)
    ref = Process.monitor(svc)
    assert GenServer.stop({:council_ex, i.node}, {:shutdown, :test}) == :ok
    assert_receive {:DOWN, ^ref, :process, ^svc, {:shutdown, :test}}, 10_000
    assert {:noproc, _} = catch_exit(GenServer.call({:council_ex, i.node}, :ping, 15_000))
    assert stop_node(i) == 0
  end

  test "SIGTERM: links and monitors told `shutdown`, exit 0, epmd entry gone" do
    i = start_node()
    Process.flag(:trap_exit, true)
    svc = make_pid(i.node, 2, i.creation)
    true = Process.link(svc)
    ref = Process.monitor(svc)
    nref = Process.monitor({:council_ex, i.node})
    assert GenServer.call({:council_ex, i.node}, :ping) == :pong
    # the runner's epmd listens on 127.0.0.1 (no assumption about what
    # "localhost" resolves to)
    [alive, _] = i.node |> Atom.to_string() |> String.split("@")
    registered? = fn ->
      {:ok, names} = :erl_epmd.names({127, 0, 0, 1})
      Enum.any?(names, fn {n, _} -> List.to_string(n) == alive end)
    end
    assert registered?.()

    assert stop_node(i) == 0
    assert_receive {:EXIT, ^svc, :shutdown}, 10_000
    assert_receive {:DOWN, ^ref, :process, ^svc, :shutdown}, 10_000
    assert_receive {:DOWN, ^nref, :process, {:council_ex, _}, :shutdown}, 10_000
    # epmd drops the entry when it sees the node's registration socket
    # close; that is its own event, so wait for it
    assert wait_until(fn -> not registered?.() end)
    Process.flag(:trap_exit, false)
  end
end
