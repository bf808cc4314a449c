defmodule CouncilEx.Application do
  @moduledoc """
  The library's supervision tree: the supervisors of Elixir-module members
  (`CouncilEx.MemberServer`), the process that turns runs' events into
  `:telemetry` events when that is enabled (`CouncilEx.Telemetry`), the
  index of the runs this VM started
  (`CouncilEx.RunIndex`) and the backend (`CouncilEx.Backend`): with
  `backend: :node` (the default) the C node manager (`CouncilEx.Node`) and
  this node's event relay (`CouncilEx.PubSub.Relay`); with `backend: :nif`
  the NIF's context (`CouncilEx.Nif.Server`), and no C node, relay or
  distribution.
  """
  use Application

  @impl true
  @spec start(Application.start_type(), term) :: {:ok, pid} | {:error, term}
  def start(_type, _args) do
    backend = CouncilEx.Backend.configured()
    CouncilEx.Backend.put(backend)
    # the specs starts have checked (CouncilEx.Spec.checked_json/1)
    :ok = CouncilEx.Spec.memo_table()

    backend_children =
      case backend do
        :node -> [CouncilEx.Node, CouncilEx.RunIndex, CouncilEx.PubSub.Relay]
        :nif -> [CouncilEx.RunIndex, CouncilEx.Nif.Server]
      end

    children =
      [
        {Task.Supervisor, name: CouncilEx.MemberServer.Tasks},
        {DynamicSupervisor, name: CouncilEx.MemberServer.Supervisor, strategy: :one_for_one},
        CouncilEx.Telemetry.Forwarder
      ] ++ backend_children

    Supervisor.start_link(children, strategy: :one_for_one, name: CouncilEx.AppSupervisor)
  end
end
