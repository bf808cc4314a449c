defmodule CouncilEx.Registry do
  @moduledoc """
  The via module of `CouncilEx.RunServer.via/2`.

  A `{:via, Registry, ...}` name is resolved on the caller's node, and the
  runs live on the C node (or in the NIF's core, `backend: :nif`), so this
  module resolves names by asking its registry. Names are
  `{registry, run_id}`:

      GenServer.call({:via, CouncilEx.Registry, {CouncilEx.Runner.Registry, "run-1"}}, :state)
      GenServer.whereis(CouncilEx.RunServer.via("run-1"))

  Registration happens when a run starts (the C node registers it);
  `register_name/2` therefore always answers `:no`.
  """

  @typedoc "A run's name in a registry."
  @type name :: {atom | binary, binary}

  @doc """
  The run's pid, or `:undefined` when no running run has that name (also
  from the moment a run ends: `CouncilEx.RunServer.whereis/2`).
  """
  @spec whereis_name(name) :: pid | :undefined
  def whereis_name({registry, run_id}) when is_binary(run_id) do
    case CouncilEx.RunServer.whereis(run_id, registry: registry) do
      {:ok, pid} -> pid
      _ -> :undefined
    end
  end

  def whereis_name(_), do: :undefined

  @doc "Runs are registered by the C node when they start: always `:no`."
  @spec register_name(name, pid) :: :no
  def register_name(_name, _pid), do: :no

  @doc "Runs leave the registry when they end (`whereis_name/1` is `:undefined` from then on): a no-op."
  @spec unregister_name(name) :: :ok
  def unregister_name(_name), do: :ok

  @doc "Sends `msg` to the named run; exits `{:badarg, {name, msg}}` when there is none."
  @spec send(name, term) :: pid
  def send(name, msg) do
    case whereis_name(name) do
      :undefined ->
        exit({:badarg, {name, msg}})

      pid ->
        Kernel.send(pid, msg)
        pid
    end
  end
end
