# The C node's --busy-poll-us (cn_node_run): calls are served with the
# spin off and with a long one, the spin after traffic ends by itself (the
# node sleeps in epoll again), and bad values are refused at start.
Code.require_file("support.exs", __DIR__)

defmodule CNode.BusyPollTest do
  use ExUnit.Case, async: false
  import CNodeTest

  # the scheduler state of an OS process ("R" running, "S" sleeping...):
  # the field after the command name, which may itself hold ") "
  defp proc_state(os_pid) do
    File.read!("/proc/#{os_pid}/stat") |> String.split(") ") |> List.last() |> String.first()
  end

  defp calls(i, n) do
    for _ <- 1..n, do: assert(GenServer.call({:council_ex, i.node}, :ping) == :pong)
  end

  test "calls are answered with the spin off and with a second-long one" do
    for us <- ["0", "1000000"] do
      i = start_node(args: ["--busy-poll-us", us])
      calls(i, 300)
      assert stop_node(i) == 0
    end
  end

  test "after traffic the node stops polling and sleeps again" do
    # a 200 ms window: long enough to be seen running right after calls on
    # an idle machine, not asserted (a loaded one may deschedule it); what
    # must hold is that the spin ends and the node then sleeps
    i = start_node(args: ["--busy-poll-us", "200000"])
    calls(i, 100)
    assert wait_until(fn -> proc_state(i.os_pid) == "S" end, 30_000)
    # more traffic starts another spin, which ends again
    calls(i, 100)
    assert wait_until(fn -> proc_state(i.os_pid) == "S" end, 30_000)
    assert stop_node(i) == 0
  end

  test "a bad --busy-poll-us is refused" do
    for v <- ["-1", "x", "1000001", "12us", ""] do
      {out, status} =
        System.cmd(Path.expand(binary()), ["--sname", unique_name("bp"), "--busy-poll-us", v],
                   stderr_to_stdout: true)
      assert status != 0
      assert out =~ "bad --busy-poll-us"
    end
  end
end
