defmodule CouncilEx.Test.Backend do
  @moduledoc """
  What the tests read of the backend in use (`CouncilEx.Backend`), so that
  one test runs against both: the C node (its service, this node's relay)
  and the NIF (its own bookkeeping; no relay).
  """

  alias CouncilEx.{Backend, Nif}
  alias CouncilEx.PubSub.Relay

  @doc "Whether the suite runs with backend :nif."
  def nif?, do: Backend.nif?()

  @doc "Waits for the backend to serve runs."
  def up! do
    if nif?(), do: :ok, else: ({:ok, _} = CouncilEx.Node.await()) && :ok
  end

  @doc "The backend's counts (`:stats`): `runs`, `runs_alive`, `subscriptions`, ..."
  def stats do
    {:ok, stats} = Backend.call(:stats)
    stats
  end

  @doc "Run processes alive."
  def alive_runs, do: stats().runs_alive

  @doc """
  The relay's counts with the C node; with the NIF, which has no relay,
  `:no_relay` (so that "the same as before" holds trivially).
  """
  def relay_stats, do: if(nif?(), do: :no_relay, else: Relay.stats())

  @doc "Subscriptions of local processes: the relay's, or the NIF's."
  def local_subscriptions,
    do: if(nif?(), do: stats().subscriptions, else: Relay.stats().subscriptions)

  @doc "Starts with subscribe: true under way in the relay (none with the NIF)."
  def starts_under_way, do: if(nif?(), do: 0, else: Relay.stats().starts)

  @doc "The local subscribers of a topic."
  def subscribers(topic) do
    if nif?(), do: Enum.sort(Backend.call({:subscribers, topic})), else: Relay.subscribers(topic)
  end

  @doc "The node a run pid lives on: the C node's, or this VM's."
  def run_node, do: if(nif?(), do: node(), else: CouncilEx.node())

  @doc """
  Runs `fun` with the backend out of reach: the C node's service asked for
  under a name it does not have, or the NIF's context closed (reopened
  afterwards). What a valid start gives meanwhile: `unreachable/0`.
  """
  def without_backend(fun) do
    if nif?() do
      :ok = Nif.call(:close)

      try do
        fun.()
      after
        :ok = Nif.call({:open, Nif.Server.config()})
      end
    else
      Application.put_env(:council_ex, :registered_name, :council_ex_not_here)

      try do
        fun.()
      after
        Application.delete_env(:council_ex, :registered_name)
      end
    end
  end

  @doc "A start's reply while `without_backend/1` holds."
  def unreachable, do: if(nif?(), do: {:error, :unavailable}, else: {:error, :noproc})

  @doc "Restarts the backend's process (it reads the configuration anew)."
  def restart_backend do
    child = if nif?(), do: Nif.Server, else: CouncilEx.Node
    :ok = Supervisor.terminate_child(CouncilEx.AppSupervisor, child)
    {:ok, _} = Supervisor.restart_child(CouncilEx.AppSupervisor, child)
    :ok
  end
end
