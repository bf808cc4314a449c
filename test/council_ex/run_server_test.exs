defmodule CouncilEx.RunServerTest do
  use ExUnit.Case, async: false
  @moduletag :cnode

  import CouncilEx.Test.Helpers
  alias CouncilEx.RunServer
  alias CouncilEx.Test.{CallersCouncil, MockCouncil, SlowCouncil}

  defp opts(id, extra \\ []) do
    Keyword.merge(
      [run_id: id, council: SlowCouncil, spec: SlowCouncil.__council__(), input: "q"],
      extra
    )
  end

  test "start/1, whereis/2, run_id/1, state/2 of a running run" do
    id = run_id()
    assert {:ok, pid} = RunServer.start(opts(id))
    assert {:ok, ^pid} = RunServer.whereis(id)
    assert RunServer.run_id(pid) == id

    summary =
      eventually(fn ->
        match?({:ok, %{status: :running, current_round: %{}}}, RunServer.state(id)) &&
          RunServer.state(id)
      end)

    assert {:ok,
            %{
              run_id: ^id,
              council: SlowCouncil,
              status: :running,
              rounds_completed: 0,
              current_round: %{name: :independent_analysis, idx: 0},
              started_at: %DateTime{}
            }} = summary

    assert {:ok, %{run_id: ^id}} = RunServer.state(pid)
    CouncilEx.cancel(pid)
  end

  test "start_link/1 links; a supervisor can start it from child_spec/1" do
    id = run_id()
    {:ok, sup} = Supervisor.start_link([], strategy: :one_for_one)
    assert {:ok, pid} = Supervisor.start_child(sup, RunServer.child_spec(opts(id)))
    assert {:ok, ^pid} = RunServer.whereis(id)
    assert [{{RunServer, ^id}, ^pid, :worker, _}] = Supervisor.which_children(sup)
    CouncilEx.cancel(pid)
  end

  test "whereis/2: unknown run, and unknown_run from the moment a run ends while state/2 still answers" do
    assert {:error, :unknown_run} = RunServer.whereis("nope-#{System.unique_integer()}")
    id = run_id()
    {:ok, pid} = RunServer.start(opts(id, council: MockCouncil, spec: MockCouncil.__council__()))
    assert {:ok, _} = CouncilEx.await(pid)
    # the await is answered once the run has ended: it is no one's now
    assert {:error, :unknown_run} = RunServer.whereis(id)
    assert GenServer.whereis(RunServer.via(id)) == nil
    assert {:noproc, _} = catch_exit(GenServer.call(RunServer.via(id), :state))
    # its outcome stays readable, by id (and CouncilEx.await/2 by id too)
    assert {:ok, %{final: _}} = CouncilEx.await(id)

    assert {:ok, %{status: :completed, current_round: nil, rounds_completed: 4}} =
             RunServer.state(id)

    # by pid too: the library knows the run id of the runs it started
    assert {:ok, %{run_id: ^id, status: :completed}} = RunServer.state(pid)
  end

  test "state/2 of an unknown run is {:error, :not_found}" do
    assert {:error, :not_found} = RunServer.state("nope-#{System.unique_integer()}")
  end

  test "registries are separate namespaces" do
    id = run_id()
    {:ok, a} = RunServer.start(opts(id, registry: TenantA))
    {:ok, b} = RunServer.start(opts(id, registry: TenantB))
    assert a != b
    assert {:ok, ^a} = RunServer.whereis(id, registry: TenantA)
    assert {:ok, ^b} = RunServer.whereis(id, registry: TenantB)
    assert {:error, :unknown_run} = RunServer.whereis(id)
    assert {:error, {:already_started, ^a}} = RunServer.start(opts(id, registry: TenantA))
    assert {:error, {:already_started, ^b}} = RunServer.start_link(opts(id, registry: TenantB))
    CouncilEx.cancel(a)
    CouncilEx.cancel(b)
  end

  test "the app-config default registry is used when :registry is absent" do
    Application.put_env(:council_ex, :runner_registry, MyApp.RunReg)
    id = run_id()

    try do
      {:ok, pid} = RunServer.start(opts(id))
      assert {:ok, ^pid} = RunServer.whereis(id, registry: MyApp.RunReg)
      assert {:ok, ^pid} = RunServer.whereis(id)
      assert {:ok, %{registry: "MyApp.RunReg"}} = RunServer.state(id)
      assert {:error, :unknown_run} = RunServer.whereis(id, registry: CouncilEx.Runner.Registry)
      CouncilEx.cancel(pid)
    after
      Application.delete_env(:council_ex, :runner_registry)
    end
  end

  test "via/2 works with GenServer.call/2, GenServer.whereis/1 and send/2" do
    id = run_id()
    {:ok, pid} = RunServer.start(opts(id, registry: ViaReg))
    via = RunServer.via(id, registry: ViaReg)
    assert GenServer.whereis(via) == pid
    assert GenServer.call(via, :run_id) == id
    assert {:ok, %{run_id: ^id}} = GenServer.call(via, :state)
    assert GenServer.whereis(RunServer.via(id)) == nil
    assert catch_exit(GenServer.call(RunServer.via("nope"), :run_id))
    GenServer.cast(via, :cancel)

    eventually(fn -> match?({:ok, %{status: :cancelled}}, RunServer.state(id, registry: ViaReg)) end)
  end

  test "$callers: a beam member sees the starter's chain on every start path" do
    me = self()
    final = fn {:ok, %{final: final}} -> final end
    expect = &inspect/1

    # through a process that has a chain of its own, as a Task has
    in_task = fn start ->
      Task.async(fn ->
        {:ok, pid} = start.()
        {self(), CouncilEx.await(pid)}
      end)
      |> Task.await(30_000)
    end

    council = [council: CallersCouncil, spec: CallersCouncil.__council__(), input: "q"]

    {task, result} = in_task.(fn -> RunServer.start([run_id: run_id()] ++ council) end)
    assert final.(result) == expect.([task, me])

    {task, result} = in_task.(fn -> RunServer.start_link([run_id: run_id()] ++ council) end)
    assert final.(result) == expect.([task, me])

    {task, result} = in_task.(fn -> CouncilEx.start(CallersCouncil, "q") end)
    assert final.(result) == expect.([task, me])

    {task, result} = in_task.(fn -> CouncilEx.start_link(CallersCouncil, "q") end)
    assert final.(result) == expect.([task, me])

    assert final.(CouncilEx.run(CallersCouncil, "q")) == expect.([me])

    # under a CouncilEx.Supervisor: the caller's chain, not the supervisor's
    {:ok, sup} = CouncilEx.Supervisor.start_link()
    {task, result} = in_task.(fn -> CouncilEx.Supervisor.start_link(sup, CallersCouncil, "q") end)
    assert final.(result) == expect.([task, me])
    GenServer.stop(sup)

    # given: as given
    {:ok, pid} = RunServer.start([run_id: run_id(), callers: [me, me]] ++ council)
    assert final.(CouncilEx.await(pid)) == expect.([me, me])
  end

  test "invalid specs come back as {:invalid_spec, field, message} errors" do
    spec = %{MockCouncil.__council__() | rounds: []}
    assert {:error, {:invalid_spec, "rounds", _}} = RunServer.start(opts(run_id(), spec: spec))
  end
end
