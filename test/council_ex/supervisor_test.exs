defmodule CouncilEx.SupervisorTest do
  use ExUnit.Case, async: false
  @moduletag :cnode

  import CouncilEx.Test.Helpers
  alias CouncilEx.RunServer
  alias CouncilEx.Test.{MockCouncil, SlowCouncil}

  test "terminate_all/1 cancels every run of the group, and only those" do
    {:ok, sup} = CouncilEx.Supervisor.start_link(registry: TenantSup)
    {:ok, outside} = CouncilEx.start(SlowCouncil, "q", registry: TenantSup)

    ids =
      for _ <- 1..3 do
        id = run_id()
        assert {:ok, _} = CouncilEx.Supervisor.start_run(sup, SlowCouncil, "q", run_id: id)
        id
      end

    assert CouncilEx.Supervisor.count_runs(sup) == 3
    assert Enum.sort(Enum.map(CouncilEx.Supervisor.which_runs(sup), &elem(&1, 0))) == Enum.sort(ids)
    assert CouncilEx.Supervisor.terminate_all(sup) == 3
    assert CouncilEx.Supervisor.count_runs(sup) == 0

    for id <- ids,
        do: assert({:ok, %{status: :cancelled}} = RunServer.state(id, registry: TenantSup))

    assert {:ok, %{status: :running}} = RunServer.state(outside)
    CouncilEx.cancel(outside)
  end

  test "stopping the group cancels its runs; finished runs leave it" do
    {:ok, sup} = CouncilEx.Supervisor.start_link()
    id = run_id()
    {:ok, _} = CouncilEx.Supervisor.start_run(sup, SlowCouncil, "q", run_id: id)
    # its id given, not asked of the pid: the run may have ended already
    quick_id = run_id()
    {:ok, _quick} =
      CouncilEx.Supervisor.start_run(sup, MockCouncil, "q", run_id: quick_id, subscribe: true)

    assert_receive {:run_completed, ^quick_id, _}, 30_000
    eventually(fn -> CouncilEx.Supervisor.count_runs(sup) == 1 end)
    GenServer.stop(sup)
    eventually(fn -> match?({:ok, %{status: :cancelled}}, RunServer.state(id)) end)
  end
end
