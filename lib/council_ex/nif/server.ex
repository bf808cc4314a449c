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
  `:member_timeout_ms`, `:max_spec_bytes`, `:output_cap`), and the
  programs `exec` may run, `config :council_ex, :exec_allow`
  (`CouncilEx.Node.exec_allow/0`: none by default, as for the C node).

  API keys: the core looks them up (and proxy variables) in its context's
  own variables first, then in this OS process's environment (getenv),
  which ERTS keeps apart from its own (`System.put_env/2` does not reach
  it). When the application starts, the VM's environment and the literal
  keys of `config :council_ex, :providers` (under their generated names,
  `CouncilEx.Providers`) are given to the context, as a managed C node
  gets them when it starts: a variable set later needs a restart of the
  application. A literal key is never in the VM's environment nor in the
  OS process's (no setenv(3): it would race with the VM's threads), and
  it is wiped when the application stops.
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

    Map.new(limits)
    |> Map.put(:retention_ms, CouncilEx.Node.retention_ms())
    |> Map.put(:exec_allow, CouncilEx.Node.exec_allow())
  end

  @impl true
  def init(_opts) do
    Process.flag(:trap_exit, true)

    case Nif.ensure_loaded() do
      :ok ->
        case Nif.call({:open, config()}) do
          :ok ->
            put_keys()
            {:ok, %{}}

          error ->
            # the shards that did open close again (terminate/2 is not
            # called when init/1 stops)
            Nif.call(:close, :infinity)
            {:stop, {:nif_open, error}}
        end

      {:error, reason} ->
        Logger.error("council_ex: cannot load #{Nif.path()}.so: #{inspect(reason)}")
        {:ok, %{}}
    end
  end

  @impl true
  def terminate(_reason, _state) do
    Nif.call(:close, :infinity)
    :ok
  end

  # The core reads API keys (and proxies) from its context's own variables
  # before getenv(3), and ERTS keeps its environment apart from the OS
  # process's (System.put_env/2 does not reach it): the VM's environment as
  # it is now, plus the configured literal keys under their generated
  # names, are given to the open context (council_ctx_setenv: no setenv(3),
  # which would race with getenv(3) in the VM's other threads). So the core
  # sees what a C node started now would see (variables set later need a
  # restart of the application, as a managed node does), a literal key never
  # enters the VM's environment nor the OS process's, and closing the
  # context wipes them.
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
  end
end
