defmodule CouncilEx.Application do
  @moduledoc """
  The library's supervision tree: the C node manager (`CouncilEx.Node`),
  the index of the runs this VM started (`CouncilEx.RunIndex`), this
  node's event relay (`CouncilEx.PubSub.Relay`), and the supervisors of
  Elixir-module members (`CouncilEx.MemberServer`).
  """
  use Application

  @impl true
  @spec start(Application.start_type(), term) :: {:ok, pid} | {:error, term}
  def start(_type, _args) do
    children = [
      {Task.Supervisor, name: CouncilEx.MemberServer.Tasks},
      {DynamicSupervisor, name: CouncilEx.MemberServer.Supervisor, strategy: :one_for_one},
      CouncilEx.Node,
      CouncilEx.RunIndex,
      CouncilEx.PubSub.Relay
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: CouncilEx.AppSupervisor)
  end
end
