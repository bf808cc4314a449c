# The C node's --busy-poll-us and --busy-poll-pace-us (cn_node_run): calls
# are served with the spin off, with a long one and with the paced polls
# of several concurrent callers on and off; the spin after traffic ends by
# itself (the node sleeps in epoll again), paced or not; bad values are
# refused at start.
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

  # k callers at once, each calling its own run pid n times: every call is
  # answered with that run's id (frames close together: the paced polls)
  defp concurrent_calls(i, k, n) do
    spec = ~s({"id":"bp","members":[{"id":"a","provider":"mock","options":{"latency_ms":600000}}],) <>
             ~s("rounds":[{"type":"independent_analysis"}]})

    runs =
      for _ <- 1..k do
        {:ok, pid} = GenServer.call({:council_ex, i.node}, {:start, %{spec: spec, input: "x"}})
        {pid, GenServer.call(pid, :run_id)}
      end

    runs
    |> Enum.map(fn {pid, id} ->
      Task.async(fn -> Enum.all?(1..n, fn _ -> GenServer.call(pid, :run_id) == id end) end)
    end)
    |> Task.await_many(60_000)
    |> Enum.each(&assert/1)
  end

  test "calls are answered with the spin off and with a second-long one" do
    for us <- ["0", "1000000"] do
      i = start_node(args: ["--busy-poll-us", us])
      calls(i, 300)
      concurrent_calls(i, 8, 100)
      assert stop_node(i) == 0
    end
  end

  test "calls are answered with the paced polls off, on, and longer than the window" do
    for {us, pace} <- [{"100", "0"}, {"100", "20"}, {"1000", "5000"}, {"100", "1000000"}] do
      i = start_node(args: ["--busy-poll-us", us, "--busy-poll-pace-us", pace])
      calls(i, 200)
      concurrent_calls(i, 8, 100)
      calls(i, 50)
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

  test "after concurrent callers the paced polls end and the node sleeps again" do
    # paced waits of 2 ms within a 200 ms window: whether the frames come
    # close enough to pace them depends on the machine (not asserted); the
    # spin must end either way
    i = start_node(args: ["--busy-poll-us", "200000", "--busy-poll-pace-us", "2000"])
    concurrent_calls(i, 8, 50)
    assert wait_until(fn -> proc_state(i.os_pid) == "S" end, 30_000)
    concurrent_calls(i, 8, 50)
    assert wait_until(fn -> proc_state(i.os_pid) == "S" end, 30_000)
    assert stop_node(i) == 0
  end

  test "a bad --busy-poll-us or --busy-poll-pace-us is refused" do
    for opt <- ["--busy-poll-us", "--busy-poll-pace-us"], v <- ["-1", "x", "1000001", "12us", ""] do
      {out, status} =
        System.cmd(Path.expand(binary()), ["--sname", unique_name("bp"), opt, v],
                   stderr_to_stdout: true)
      assert status != 0
      assert out =~ "bad #{opt}"
    end
  end
end
