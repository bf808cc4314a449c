defmodule CouncilEx.RunIndex do
  @moduledoc """
  The run id (and registry) of each run pid this VM started, so that
  `CouncilEx.await/2` on a run that has already ended (its pid answers
  `:noproc`) can still ask the C node for the retained outcome
  (`{:result, registry, run_id}`, docs/protocol.md).

  `CouncilEx.RunServer` records a run when its start returns `{:ok, pid}`
  (when the run id is known: always, unless `run_id: nil` was passed to
  `CouncilEx.RunServer.start/1`). This process monitors the run and forgets
  it once the C node has forgotten it too: the retention window after the
  run ends (`CouncilEx.Node.retention_ms/0`: `config :council_ex,
  :run_retention_ms`, default 5 minutes, which a managed C node is given as
  `--retention-ms`), or at once when the C node is lost (its runs are gone
  with it). A run lost that way (its pid went down with `:noconnection`
  before it ended) is remembered by `{registry, run_id}` for the same
  window: it is the stale entry for which `CouncilEx.RunServer.whereis/2`
  answers `{:error, :runner_dead}` while no live run has its id.

  The table is public (`:set`, keyed by pid): lookups and inserts are done
  by the calling process; only the cleanup goes through this process.
  Each row says whether the run's process still lives, as far as its
  monitor has told (`live/0`: what `CouncilEx.Node.status/0` lists per
  node).
  """
  use GenServer

  @table __MODULE__
  @lost CouncilEx.RunIndex.Lost
  @sweep_ms 1_000

  @doc "Starts the index (normally done by the application)."
  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "Records that `pid` is the run `run_id` of `registry` (the C node's registry binary)."
  @spec put(pid, binary, binary) :: :ok
  def put(pid, registry, run_id) when is_pid(pid) and is_binary(registry) and is_binary(run_id) do
    if :ets.insert_new(@table, {pid, registry, run_id, true}),
      do: GenServer.cast(__MODULE__, {:watch, pid})

    :ok
  rescue
    # The index is not running (the application is stopping): nothing to record.
    ArgumentError -> :ok
  end

  @doc "`{:ok, {registry, run_id}}` of a run pid recorded here, or `:error`."
  @spec lookup(pid) :: {:ok, {binary, binary}} | :error
  def lookup(pid) when is_pid(pid) do
    case :ets.lookup(@table, pid) do
      [{^pid, registry, run_id, _live}] -> {:ok, {registry, run_id}}
      [] -> :error
    end
  rescue
    ArgumentError -> :error
  end

  @doc """
  Whether the run `run_id` of `registry` (the C node's registry binary),
  started from this VM, was lost with its C node within the retention
  window.
  """
  @spec lost?(binary, binary) :: boolean
  def lost?(registry, run_id) do
    :ets.member(@lost, {registry, run_id})
  rescue
    ArgumentError -> false
  end

  @doc """
  The runs recorded here whose process has not ended yet (no monitor
  message for it has come): `{pid, registry, run_id}`.
  """
  @spec live() :: [{pid, binary, binary}]
  def live do
    for [pid, registry, run_id] <- :ets.match(@table, {:"$1", :"$2", :"$3", true}),
        do: {pid, registry, run_id}
  rescue
    ArgumentError -> []
  end

  @doc "How many runs are recorded (for tests and introspection)."
  @spec size() :: non_neg_integer
  def size, do: :ets.info(@table, :size)

  @doc false
  @spec retention_ms() :: non_neg_integer
  def retention_ms, do: CouncilEx.Node.retention_ms()

  # ------------------------------------------------------------- callbacks

  @impl true
  def init(_opts) do
    :ets.new(@table, [
      :named_table,
      :public,
      :set,
      read_concurrency: true,
      write_concurrency: true
    ])

    :ets.new(@lost, [:named_table, :protected, :set, read_concurrency: true])

    # expiring: runs that ended, as {forget_at_ms, pid}, and runs lost with
    # their node, as {forget_at_ms, {:lost, {registry, run_id}}}, soonest first
    {:ok, %{expiring: :gb_sets.new(), timer: nil}}
  end

  @impl true
  def handle_cast({:watch, pid}, state) do
    # A run that ended already gives a :DOWN (:noproc) at once.
    Process.monitor(pid)
    {:noreply, state}
  end

  @impl true
  def handle_info({:DOWN, _ref, :process, pid, :noconnection}, state) do
    case :ets.take(@table, pid) do
      [{^pid, registry, run_id, _live}] ->
        key = {registry, run_id}
        :ets.insert(@lost, {key})
        expiring = :gb_sets.add({now() + retention_ms(), {:lost, key}}, state.expiring)
        {:noreply, schedule(%{state | expiring: expiring})}

      [] ->
        {:noreply, state}
    end
  end

  def handle_info({:DOWN, _ref, :process, pid, _reason}, state) do
    :ets.update_element(@table, pid, {4, false})
    forget_at = now() + retention_ms()
    {:noreply, schedule(%{state | expiring: :gb_sets.add({forget_at, pid}, state.expiring)})}
  end

  def handle_info(:sweep, state) do
    {:noreply, schedule(sweep(%{state | timer: nil}, now()))}
  end

  def handle_info(_other, state), do: {:noreply, state}

  defp sweep(state, now) do
    if :gb_sets.is_empty(state.expiring) do
      state
    else
      case :gb_sets.take_smallest(state.expiring) do
        {{at, {:lost, key}}, rest} when at <= now ->
          :ets.delete(@lost, key)
          sweep(%{state | expiring: rest}, now)

        {{at, pid}, rest} when at <= now ->
          :ets.delete(@table, pid)
          sweep(%{state | expiring: rest}, now)

        _ ->
          state
      end
    end
  end

  defp schedule(%{timer: nil} = state) do
    if :gb_sets.is_empty(state.expiring),
      do: state,
      else: %{state | timer: Process.send_after(self(), :sweep, @sweep_ms)}
  end

  defp schedule(state), do: state

  defp now, do: System.monotonic_time(:millisecond)
end
