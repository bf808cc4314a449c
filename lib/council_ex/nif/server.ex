defmodule CouncilEx.Nif.Server do
  @moduledoc """
  The NIF backend's place in the application (`backend: :nif`): loads
  `priv/council_nif.so` and opens the core's context when the application
  starts, and closes it when the application stops. Closing cancels every
  run as the C node's SIGTERM does: subscribers get `run_cancelled`,
  awaiters their answer, and only then do the runs' pids exit (with
  `:shutdown`), so linked and monitoring processes learn it last. Runs
  and retained outcomes do not outlive the application, as they do not
  outlive a C node.

  The context takes `:run_retention_ms` (`CouncilEx.Node.retention_ms/0`)
  and `config :council_ex, :nif_limits` (a keyword list of the core's
  `council_config` fields: `:max_runs`, `:max_retained`,
  `:max_subscribers_per_topic`, `:subscriber_queue_cap`,
  `:member_timeout_ms`, `:max_spec_bytes`, `:output_cap`).

  API keys: the core reads them from the environment of this OS process
  (getenv), which ERTS keeps apart from its own (`System.put_env/2` does
  not reach it). When the application starts, the VM's environment and
  the literal keys of `config :council_ex, :providers` (under their
  generated names, `CouncilEx.Providers`) are set there, as a managed C
  node gets them when it starts: a variable set later needs a restart of
  the application. A literal key is never in the VM's own environment
  (`System.get_env/1`), and it is unset again when the application stops.
  """
  use GenServer
  require Logger

  alias CouncilEx.Nif

  @limit_keys [
    :max_runs,
    :max_retained,
    :max_subscribers_per_topic,
    :subscriber_queue_cap,
    :member_timeout_ms,
    :max_spec_bytes,
    :output_cap
  ]

  @doc false
  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "A child spec with time to cancel the runs on stop."
  @spec child_spec(keyword) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}, shutdown: 30_000}
  end

  @doc false
  @spec config() :: map
  def config do
    limits = Application.get_env(:council_ex, :nif_limits, [])

    for {k, v} <- limits, k not in @limit_keys or not (is_integer(v) and v >= 0) do
      raise ArgumentError,
            "config :council_ex, :nif_limits: #{inspect(k)} must be one of #{inspect(@limit_keys)} " <>
              "with a non-negative integer, got: #{inspect(v)}"
    end

    Map.new(limits) |> Map.put(:retention_ms, CouncilEx.Node.retention_ms())
  end

  @impl true
  def init(_opts) do
    Process.flag(:trap_exit, true)

    case Nif.ensure_loaded() do
      :ok ->
        keys = put_keys()

        case Nif.call({:open, config()}) do
          :ok -> {:ok, %{keys: keys}}
          error -> {:stop, {:nif_open, error}}
        end

      {:error, reason} ->
        Logger.error("council_ex: cannot load #{Nif.path()}.so: #{inspect(reason)}")
        {:ok, %{keys: []}}
    end
  end

  @impl true
  def terminate(_reason, state) do
    Nif.call(:close, :infinity)
    Nif.call({:unsetenv, state.keys})
    :ok
  end

  # The core reads API keys with getenv(3) in this OS process, and ERTS
  # keeps its environment apart (System.put_env/2 does not reach it): the
  # VM's environment as it is now, plus the configured literal keys under
  # their generated names, are handed to the NIF, which sets them on the
  # core's thread. So the core sees what a C node started now would see
  # (variables set later need a restart of the application, as a managed
  # node does), and a literal key never enters the VM's own environment.
  # Returns the keys' names (removed again when the application stops);
  # the state holds names only, never a key.
  defp put_keys do
    keys =
      try do
        for {name, key} <- CouncilEx.Providers.node_env(),
            do: {List.to_string(name), List.to_string(key)}
      rescue
        e in ArgumentError ->
          Logger.error("council_ex: provider keys not set: " <> e.message)
          []
      end

    vars =
      for {name, value} <- System.get_env(),
          name != "" and not String.contains?(name, ["=", <<0>>]),
          not String.contains?(value, <<0>>),
          do: {name, value}

    case Nif.call({:setenv, vars ++ keys}) do
      :ok -> :ok
      other -> Logger.error("council_ex: the NIF's environment not set: #{inspect(other)}")
    end

    Enum.map(keys, &elem(&1, 0))
  end
end
