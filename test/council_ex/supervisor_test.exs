defmodule CouncilEx.SupervisorTest do
  # CouncilEx.Supervisor is a DynamicSupervisor whose children are the
  # runs' pids (the C node's, or the NIF's local ones): OTP's own
  # which_children, count_children, terminate_child and shutdown work on
  # them, and a run honours the supervisor's exit signal as a GenServer
  # that stops in terminate/2 does (cancelled, subscribers told, then the
  # pid exits with :shutdown).
  use ExUnit.Case, async: false
  @moduletag :cnode

  import CouncilEx.Test.Helpers
  alias CouncilEx.RunServer
  alias CouncilEx.Test.{Backend, MockCouncil, SlowCouncil}

  # A run under sup that cannot end before its gate opens (the gate's
  # owner: the process that made `council`), the caller subscribed.
  defp gated_run(sup, council \\ gated_council()) do
    id = run_id("sup")
    {:ok, pid} = CouncilEx.Supervisor.start_link(sup, council, "q", run_id: id, subscribe: true)
    assert_receive {:run_started, ^id, _, "q"}
    {id, pid}
  end

  test "which_children/1 and count_children/1 list the runs; runs outlive their caller; finished ones leave" do
    {:ok, sup} = CouncilEx.Supervisor.start_link(registry: TenantSup)
    parent = self()
    council = gated_council()

    # started by a process that is then killed: the runs are the supervisor's
    caller =
      spawn(fn ->
        runs = for _ <- 1..2, do: gated_run(sup, council)
        send(parent, {:runs, runs})
        receive do: (:never -> :ok)
      end)

    assert_receive {:runs, runs}, 15_000
    Process.exit(caller, :kill)
    pids = Enum.map(runs, &elem(&1, 1))

    for pid <- pids, do: assert(node(pid) == Backend.run_node())
    children = DynamicSupervisor.which_children(sup)
    assert Enum.sort(for {:undefined, pid, :worker, [RunServer]} <- children, do: pid) == Enum.sort(pids)
    assert DynamicSupervisor.count_children(sup) == %{specs: 2, active: 2, supervisors: 0, workers: 2}

    for {id, pid} <- runs do
      assert {:ok, ^pid} = RunServer.whereis(id, registry: TenantSup)
      assert {:ok, %{status: :running}} = GenServer.call(pid, :state)
    end

    assert Enum.sort(CouncilEx.Supervisor.which_runs(sup)) == Enum.sort(runs)
    assert CouncilEx.Supervisor.count_runs(sup) == 2

    # a run that completes leaves the supervisor (:normal, temporary)
    quick = run_id("sup")
    {:ok, quick_pid} = CouncilEx.Supervisor.start_link(sup, MockCouncil, "q", run_id: quick, subscribe: true)
    ref = Process.monitor(quick_pid)
    assert_receive {:run_completed, ^quick, _}
    assert_receive {:DOWN, ^ref, :process, ^quick_pid, :normal}
    eventually(fn -> DynamicSupervisor.count_children(sup).active == 2 end)
    refute quick_pid in Enum.map(DynamicSupervisor.which_children(sup), &elem(&1, 1))
    assert {:ok, %{status: :completed, registry: "TenantSup"}} = RunServer.state(quick, registry: TenantSup)

    GenServer.stop(sup)
  end

  test "terminate_child/2: the run is cancelled, subscribers and awaiters told, its pid exits :shutdown" do
    {:ok, sup} = CouncilEx.Supervisor.start_link()
    {id, pid} = gated_run(sup)
    ref = Process.monitor(pid)
    awaiter = Task.async(fn -> CouncilEx.await(pid) end)
    wait_calling(awaiter.pid)

    assert :ok = DynamicSupervisor.terminate_child(sup, pid)
    assert_receive {:run_cancelled, ^id, %{rounds: _}}
    assert_receive {:DOWN, ^ref, :process, ^pid, :shutdown}
    assert {:error, {:cancelled, %{rounds: _}}} = Task.await(awaiter, 15_000)
    assert {:ok, %{status: :cancelled}} = RunServer.state(id)
    assert {:error, :unknown_run} = RunServer.whereis(id)
    assert DynamicSupervisor.which_children(sup) == []
    assert {:error, :not_found} = DynamicSupervisor.terminate_child(sup, pid)
    assert {:error, :not_found} = CouncilEx.Supervisor.terminate_run(sup, pid)

    # the convenience does the same
    {id2, pid2} = gated_run(sup)
    assert :ok = CouncilEx.Supervisor.terminate_run(sup, pid2)
    assert_receive {:run_cancelled, ^id2, _}
    GenServer.stop(sup)
  end

  test "the supervisor's shutdown ends its runs: cancelled, subscribers told, pids down with :shutdown" do
    {:ok, parent} =
      Supervisor.start_link([{CouncilEx.Supervisor, name: :sup_shutdown_test}], strategy: :one_for_one)

    runs = for _ <- 1..3, do: gated_run(:sup_shutdown_test)
    refs = for {_, pid} <- runs, do: {Process.monitor(pid), pid}

    # stopping the tree stops CouncilEx.Supervisor, which shuts its children down
    Supervisor.stop(parent)

    for {id, _} <- runs do
      assert_receive {:run_cancelled, ^id, _}
      assert {:ok, %{status: :cancelled}} = RunServer.state(id)
    end

    for {ref, pid} <- refs, do: assert_receive({:DOWN, ^ref, :process, ^pid, :shutdown})
  end

  test "terminate_all/1 ends every run of the group, and only those" do
    {:ok, sup} = CouncilEx.Supervisor.start_link(registry: TenantSup)
    {:ok, outside} = CouncilEx.start(SlowCouncil, "q", registry: TenantSup)
    runs = for _ <- 1..3, do: gated_run(sup)

    assert CouncilEx.Supervisor.terminate_all(sup) == :ok
    # synchronous: every run has ended when it returns
    assert DynamicSupervisor.count_children(sup).active == 0

    for {id, _} <- runs do
      assert {:ok, %{status: :cancelled}} = RunServer.state(id, registry: TenantSup)
      assert_receive {:run_cancelled, ^id, _}
    end

    assert {:ok, %{status: :running}} = RunServer.state(outside)
    CouncilEx.cancel(outside)
    GenServer.stop(sup)
  end

  test "{:already_started, pid} with the running run's pid, through the supervisor and elsewhere" do
    {:ok, sup} = CouncilEx.Supervisor.start_link()
    {id, pid} = gated_run(sup)

    assert {:error, {:already_started, ^pid}} =
             CouncilEx.Supervisor.start_link(sup, MockCouncil, "again", run_id: id)

    assert {:error, {:already_started, ^pid}} =
             CouncilEx.Supervisor.start_link(sup, MockCouncil, "again", run_id: id, subscribe: true)

    run_opts = [run_id: id, council: MockCouncil, spec: MockCouncil.__council__(), input: "x"]
    assert {:error, {:already_started, ^pid}} = CouncilEx.Supervisor.start_child(sup, run_opts)

    assert {:error, {:already_started, ^pid}} =
             DynamicSupervisor.start_child(sup, {RunServer, run_opts})

    assert {:error, {:already_started, ^pid}} = CouncilEx.start(MockCouncil, "x", run_id: id)
    assert {:error, {:already_started, ^pid}} = CouncilEx.start_link(MockCouncil, "x", run_id: id)
    assert {:error, {:already_started, ^pid}} = CouncilEx.run(MockCouncil, "x", run_id: id)
    assert {:error, {:already_started, ^pid}} = RunServer.start(run_opts)
    assert {:error, {:already_started, ^pid}} = RunServer.start_link(run_opts)
    assert DynamicSupervisor.count_children(sup).active == 1
    refute_received {_, ^id, _, "again"}

    # once it has ended its id stays taken while it is retained, with no pid
    open_gate()
    eventually(fn -> match?({:ok, %{status: :completed}}, RunServer.state(id)) end)
    assert {:error, :run_id_retained} = CouncilEx.Supervisor.start_link(sup, MockCouncil, "x", run_id: id)
    assert {:error, :run_id_retained} = CouncilEx.start(MockCouncil, "x", run_id: id)
    GenServer.stop(sup)
  end

  test "start_link/4 validates before anything starts; :max_children bounds the group" do
    {:ok, sup} = CouncilEx.Supervisor.start_link(max_children: 1)

    assert_raise ArgumentError, fn -> CouncilEx.Supervisor.start_link(sup, MockCouncil, "q", bogus: 1) end
    assert_raise ArgumentError, fn -> CouncilEx.Supervisor.start_link(sup, NotACouncil, "q") end
    assert DynamicSupervisor.count_children(sup).active == 0

    {_id, _pid} = gated_run(sup)
    assert {:error, :max_children} = CouncilEx.Supervisor.start_link(sup, MockCouncil, "q")
    GenServer.stop(sup)
  end
end
