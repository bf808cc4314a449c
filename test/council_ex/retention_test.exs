defmodule CouncilEx.RetentionTest do
  # config :council_ex, :run_retention_ms reaches the managed C node as
  # --retention-ms, so that the node and the library's RunIndex forget a
  # finished run at the same time.
  use ExUnit.Case, async: false
  @moduletag :cnode

  import CouncilEx.Test.Helpers
  alias CouncilEx.RunIndex
  alias CouncilEx.Test.QuickCouncil

  setup do
    on_exit(fn ->
      for key <- [:run_retention_ms, :node_args], do: Application.delete_env(:council_ex, key)
    end)
  end

  # The managed node's command line, from /proc.
  defp node_cmdline do
    os_pid = CouncilEx.Node.os_pid()
    assert is_integer(os_pid)
    "/proc/#{os_pid}/cmdline" |> File.read!() |> String.split(<<0>>, trim: true)
  end

  # Kills the managed node and waits for the manager's restart (which reads
  # the configuration anew).
  defp restart_node do
    old = CouncilEx.Node.os_pid()
    {_, 0} = System.cmd("kill", ["-9", Integer.to_string(old)])

    wait_restarted(old)
  end

  defp retention_arg(args) do
    args |> Enum.chunk_every(2, 1, :discard) |> Enum.filter(&match?(["--retention-ms", _], &1))
  end

  @tag :cnode_only
  test "the managed node is started with :run_retention_ms; node and RunIndex forget a run after it" do
    # 5 s: the two reads that follow the run's end fall inside the window
    # even on a loaded machine
    Application.put_env(:council_ex, :run_retention_ms, 5_000)

    try do
      restart_node()
      assert [["--retention-ms", "5000"]] = retention_arg(node_cmdline())
      assert RunIndex.retention_ms() == 5_000

      id = run_id("retain")
      {:ok, pid} = CouncilEx.start(QuickCouncil, "q", run_id: id)
      assert {:ok, result} = CouncilEx.await(pid, 30_000)
      # readable by id and by pid once it has ended ...
      assert {:ok, ^result} = CouncilEx.await(id, 5_000)
      assert {:ok, %{status: :completed}} = CouncilEx.RunServer.state(id)
      # ... then gone from the C node and from the RunIndex alike (not 5 minutes later)
      eventually(fn -> CouncilEx.RunServer.state(id) == {:error, :not_found} end, 400, 50)
      assert CouncilEx.await(id, 5_000) == {:error, :not_found}
      eventually(fn -> RunIndex.lookup(pid) == :error end, 400, 50)
    after
      Application.delete_env(:council_ex, :run_retention_ms)
      restart_node()
    end

    # the default again: the C node's own default, passed explicitly
    assert [["--retention-ms", "300000"]] = retention_arg(node_cmdline())
  end

  test "retention_ms/0: :run_retention_ms, else --retention-ms of :node_args, else 300000" do
    assert CouncilEx.Node.retention_ms() == 300_000
    assert retention_arg(CouncilEx.Node.node_args()) == [["--retention-ms", "300000"]]

    Application.put_env(:council_ex, :node_args, ["--log-level", "info", "--retention-ms", "2500"])
    assert CouncilEx.Node.retention_ms() == 2_500
    assert RunIndex.retention_ms() == 2_500
    args = CouncilEx.Node.node_args()
    assert retention_arg(args) == [["--retention-ms", "2500"]]
    assert ["--log-level", "info"] in Enum.chunk_every(args, 2, 1, :discard)

    # :run_retention_ms wins (with a warning) when both are set
    Application.put_env(:council_ex, :run_retention_ms, 4_000)

    assert ExUnit.CaptureLog.capture_log(fn ->
             assert retention_arg(CouncilEx.Node.node_args()) == [["--retention-ms", "4000"]]
           end) =~ "--retention-ms 2500"

    assert RunIndex.retention_ms() == 4_000
  end

  test "a retention that is not a positive integer is refused (the C node refuses 0)" do
    for bad <- [0, -1, 1.5, "1000", :soon] do
      assert_raise ArgumentError, ~r/run_retention_ms must be a positive integer/, fn ->
        CouncilEx.Node.retention_ms({:ok, bad}, [])
      end
    end

    for bad <- ["0", "soon", "-5"] do
      assert_raise ArgumentError, ~r/--retention-ms in config .* must be a positive integer/, fn ->
        CouncilEx.Node.retention_ms(:error, ["--retention-ms", bad])
      end
    end

    # unset (nil): the node_args value or the default
    assert CouncilEx.Node.retention_ms({:ok, nil}, []) == 300_000
    assert CouncilEx.Node.retention_ms({:ok, nil}, ["--retention-ms", "700"]) == 700

    assert CouncilEx.Node.retention_ms(:error, ["--retention-ms", "10", "--retention-ms", "20"]) ==
             20
  end
end
