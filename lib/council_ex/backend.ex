defmodule CouncilEx.Backend do
  @moduledoc """
  Which backend serves this VM's runs: `config :council_ex, backend:
  :node` (the default: the C node `priv/council_node`, a second OS process
  reached over Erlang distribution, `CouncilEx.Node`) or `:nif` (the same
  C core loaded into this VM, `CouncilEx.Nif`). The API is the same with
  both: `CouncilEx.start/3`, `run/3`, `await/2`, `cancel/1`,
  `CouncilEx.RunServer`, `CouncilEx.PubSub`, `CouncilEx.Supervisor`, and
  runs are pids in both. README section 4 says when to choose which.

  The backend is read when the application starts; change it by
  restarting the application.
  """

  alias CouncilEx.Nif

  @key {__MODULE__, :backend}

  @doc "The backend in use: `:node` or `:nif`."
  @spec backend() :: :node | :nif
  def backend do
    case :persistent_term.get(@key, nil) do
      nil -> configured()
      b -> b
    end
  end

  @doc "Whether runs are served by the NIF."
  @spec nif?() :: boolean
  def nif?, do: backend() == :nif

  @doc false
  # The configured backend (raises ArgumentError for another value).
  @spec configured() :: :node | :nif
  def configured do
    case Application.get_env(:council_ex, :backend, :node) do
      b when b in [:node, :nif] ->
        b

      other ->
        raise ArgumentError,
              "config :council_ex, :backend must be :node or :nif, got: #{inspect(other)}"
    end
  end

  @doc false
  # Fixes the backend for this run of the application (its start).
  @spec put(:node | :nif) :: :ok
  def put(backend) when backend in [:node, :nif], do: :persistent_term.put(@key, backend)

  @doc false
  # A request of the service (docs/protocol.md, "The registered service")
  # to the backend: the C node's `:council_ex` process, or the NIF. The
  # replies are the same; a backend that is not up gives
  # `{:error, :unavailable}` (`:noconnection` when the C node was lost).
  @spec call(term, timeout) :: term
  def call(request, timeout \\ 15_000) do
    if nif?(), do: Nif.call(request, timeout), else: CouncilEx.Node.call(request, timeout)
  end

  @doc false
  # Unlinks the calling process from `pid` and drops the exit signal of
  # `pid` that may be in its mailbox already (a caller that traps exits).
  @spec unlink_flush(pid) :: :ok
  def unlink_flush(pid) do
    Process.unlink(pid)

    receive do
      {:EXIT, ^pid, _} -> :ok
    after
      0 -> :ok
    end
  end

  @doc false
  # Starts a run from the service's start options (`how`: :start or
  # :start_link): `{:ok, run_pid}` or `{:error, reason}`.
  @spec start(:start | :start_link, map) :: {:ok, pid} | {:error, term}
  def start(how, request) do
    if nif?(),
      do: Nif.start_run(how, Map.delete(request, :placement)),
      else: CouncilEx.Node.call({how, request})
  end
end
