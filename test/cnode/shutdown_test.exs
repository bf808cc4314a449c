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
    assert_receive {:DOWN, ^ref, :process, ^svc, {:shutdown, :test}}, 2000
    assert {:noproc, _} = catch_exit(GenServer.call({:council_ex, i.node}, :ping, 2000))
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
    {:ok, names} = :erl_epmd.names(~c"localhost")
    [alive, _] = i.node |> Atom.to_string() |> String.split("@")
    assert Enum.any?(names, fn {n, _} -> List.to_string(n) == alive end)

    assert stop_node(i) == 0
    assert_receive {:EXIT, ^svc, :shutdown}, 2000
    assert_receive {:DOWN, ^ref, :process, ^svc, :shutdown}, 2000
    assert_receive {:DOWN, ^nref, :process, {:council_ex, _}, :shutdown}, 2000
    {:ok, names} = :erl_epmd.names(~c"localhost")
    refute Enum.any?(names, fn {n, _} -> List.to_string(n) == alive end)
    Process.flag(:trap_exit, false)
  end
end
