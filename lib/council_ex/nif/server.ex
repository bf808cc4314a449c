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
  `:member_timeout_ms`, `:max_spec_bytes`, `:output_cap`). Literal API
  keys of `config :council_ex, :providers` are put into this VM's
  environment (the core reads keys there, `CouncilEx.Providers`).
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
        put_keys()

        case Nif.call({:open, config()}) do
          :ok -> {:ok, %{}}
          error -> {:stop, {:nif_open, error}}
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

  defp put_keys do
    System.put_env(
      CouncilEx.Providers.node_env()
      |> Enum.map(fn {k, v} -> {to_string(k), to_string(v)} end)
    )
  rescue
    e in ArgumentError -> Logger.error("council_ex: provider keys not set: " <> e.message)
  end
end
