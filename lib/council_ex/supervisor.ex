defmodule CouncilEx.Supervisor do
  @moduledoc """
  A caller-owned group of runs, for tenant isolation and bulk termination.

  Runs started through a `CouncilEx.Supervisor` are linked to it (the C node
  links each run to this process): when the supervisor stops or dies, all
  its runs are cancelled; `terminate_all/1` cancels them on demand. A group
  may have its own registry (`:registry`), so one tenant's run ids never
  collide with another's.

      children = [{CouncilEx.Supervisor, name: MyApp.TenantA, registry: MyApp.TenantA.Runs}]
      Supervisor.start_link(children, strategy: :one_for_one)

      {:ok, pid} = CouncilEx.Supervisor.start_run(MyApp.TenantA, MyApp.Triage, "input")
      CouncilEx.Supervisor.which_runs(MyApp.TenantA)  #=> [{"run id", pid}]
      CouncilEx.Supervisor.terminate_all(MyApp.TenantA)

  Runs are never restarted: a run is one piece of work, not a service.
  """
  use GenServer

  @doc """
  Starts a group. Options: `:name` (a GenServer name), `:registry` (the
  default registry of its runs; default `CouncilEx.RunServer.default_registry/0`).
  """
  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(opts \\ []) do
    {gen_opts, opts} = Keyword.split(opts, [:name])
    GenServer.start_link(__MODULE__, opts, gen_opts)
  end

  @doc "A child spec (`type: :supervisor`, id: the `:name` option or this module)."
  @spec child_spec(keyword) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: Keyword.get(opts, :name, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      type: :supervisor
    }
  end

  @doc """
  Starts a run in the group: `council` and `input` as in `CouncilEx.start/3`,
  options too (`subscribe: true` subscribes the caller). Returns
  `{:ok, pid}` or `{:error, reason}`.
  """
  @spec start_run(GenServer.server(), module | CouncilEx.Spec.t(), term, keyword) ::
          {:ok, pid} | {:error, term}
  def start_run(sup, council, input, opts \\ []) do
    opts = Keyword.put_new_lazy(opts, :registry, fn -> GenServer.call(sup, :registry) end)

    CouncilEx.__start__(council, input, opts, fn run_opts ->
      GenServer.call(sup, {:start_run, run_opts}, 30_000)
    end)
  end

  @doc "The group's live runs as `{run_id, pid}` pairs."
  @spec which_runs(GenServer.server()) :: [{binary, pid}]
  def which_runs(sup), do: GenServer.call(sup, :which_runs)

  @doc "How many runs of the group are alive."
  @spec count_runs(GenServer.server()) :: non_neg_integer
  def count_runs(sup), do: GenServer.call(sup, :count_runs)

  @doc "Cancels one run of the group. `{:error, :not_found}` if it is not one of them."
  @spec terminate_run(GenServer.server(), pid) :: :ok | {:error, :not_found}
  def terminate_run(sup, pid), do: GenServer.call(sup, {:terminate_run, pid}, 30_000)

  @doc """
  Cancels every run of the group and waits (up to `timeout`) until they have
  ended. Returns how many runs were cancelled.
  """
  @spec terminate_all(GenServer.server(), timeout) :: non_neg_integer
  def terminate_all(sup, timeout \\ 30_000),
    do: GenServer.call(sup, {:terminate_all, timeout}, :infinity)

  # ------------------------------------------------------------- callbacks

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    registry = Keyword.get_lazy(opts, :registry, &CouncilEx.RunServer.default_registry/0)
    {:ok, %{registry: registry, runs: %{}, waiting: []}}
  end

  @impl true
  def handle_call(:registry, _from, state), do: {:reply, state.registry, state}

  def handle_call({:start_run, run_opts}, _from, state) do
    case CouncilEx.RunServer.start_link(run_opts) do
      {:ok, pid} ->
        run_id = Keyword.get(run_opts, :run_id) || safe_run_id(pid)
        {:reply, {:ok, pid}, %{state | runs: Map.put(state.runs, pid, run_id)}}

      error ->
        {:reply, error, state}
    end
  end

  def handle_call(:which_runs, _from, state) do
    {:reply, Enum.map(state.runs, fn {pid, id} -> {id, pid} end), state}
  end

  def handle_call(:count_runs, _from, state), do: {:reply, map_size(state.runs), state}

  def handle_call({:terminate_run, pid}, _from, state) do
    if Map.has_key?(state.runs, pid) do
      cancel(pid)
      {:reply, :ok, state}
    else
      {:reply, {:error, :not_found}, state}
    end
  end

  def handle_call({:terminate_all, timeout}, from, state) do
    pids = Map.keys(state.runs)
    pids |> Task.async_stream(&cancel/1, max_concurrency: 64, timeout: :infinity) |> Stream.run()

    if state.runs == %{} do
      {:reply, 0, state}
    else
      ref = make_ref()
      Process.send_after(self(), {:terminate_timeout, ref}, timeout)
      {:noreply, %{state | waiting: [{from, ref, length(pids)} | state.waiting]}}
    end
  end

  @impl true
  def handle_info({:EXIT, pid, _reason}, state) when is_map_key(state.runs, pid) do
    state = %{state | runs: Map.delete(state.runs, pid)}
    {:noreply, maybe_reply(state)}
  end

  def handle_info({:EXIT, _pid, reason}, state) when reason not in [:normal] do
    # Our parent (or a linked caller) exited: stop, which cancels our runs.
    {:stop, reason, state}
  end

  def handle_info({:terminate_timeout, ref}, state) do
    {done, rest} = Enum.split_with(state.waiting, fn {_, r, _} -> r == ref end)
    for {from, _, n} <- done, do: GenServer.reply(from, n)
    {:noreply, %{state | waiting: rest}}
  end

  def handle_info(_msg, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    state.runs
    |> Map.keys()
    |> Task.async_stream(&cancel/1, max_concurrency: 64, timeout: :infinity)
    |> Stream.run()

    :ok
  end

  defp maybe_reply(%{runs: runs, waiting: waiting} = state) when runs == %{} and waiting != [] do
    for {from, _, n} <- waiting, do: GenServer.reply(from, n)
    %{state | waiting: []}
  end

  defp maybe_reply(state), do: state

  defp cancel(pid) do
    GenServer.call(pid, :cancel, 10_000)
  catch
    :exit, _ -> :ok
  end

  defp safe_run_id(pid) do
    CouncilEx.RunServer.run_id(pid)
  catch
    :exit, _ -> nil
  end
end
