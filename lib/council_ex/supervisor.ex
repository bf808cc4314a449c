defmodule CouncilEx.Supervisor do
  @moduledoc """
  A `DynamicSupervisor` of runs, for group management: tenant isolation
  (one supervisor per tenant, each with its own registry if you like),
  bulk termination and in-flight visibility. Runs are unsupervised by
  default (`CouncilEx.start/3`, `CouncilEx.start_link/3`); use this module
  when a group of runs should be owned by a place in your supervision tree.

      children = [{CouncilEx.Supervisor, name: MyApp.RunSup, registry: MyApp.TenantA.Runs}]
      Supervisor.start_link(children, strategy: :one_for_one)

      {:ok, pid} = CouncilEx.Supervisor.start_link(MyApp.RunSup, MyApp.Triage, "input")
      run_id = CouncilEx.RunServer.run_id(pid)

      DynamicSupervisor.which_children(MyApp.RunSup)  #=> [{:undefined, pid, :worker, [CouncilEx.RunServer]}]
      DynamicSupervisor.count_children(MyApp.RunSup)  #=> %{active: 1, workers: 1, ...}
      DynamicSupervisor.terminate_child(MyApp.RunSup, pid)
      CouncilEx.Supervisor.terminate_all(MyApp.RunSup)

  Its children are the runs' pids themselves: processes of the C node
  (remote pids, which OTP supervises through links and monitors as it
  does local ones), or with `backend: :nif` the local processes that stand
  for the runs. Each is started by `CouncilEx.RunServer.start_link/1`
  called by the supervisor (its child spec, `restart: :temporary`: a run
  is one piece of work and is never restarted), so the run is linked to
  the supervisor, not to the caller: it outlives the caller and ends with
  the supervisor.

  A run honours the supervisor's exit signals as a GenServer that stops in
  its `terminate/2` does: `DynamicSupervisor.terminate_child/2`,
  `terminate_all/1` and the supervisor's own shutdown send it `:shutdown`;
  the run is cancelled, its subscribers get `run_cancelled` (and awaiters
  `{:error, {:cancelled, result}}`), then its process exits with
  `:shutdown`, which is what the supervisor waits for (within the child
  spec's `shutdown`, 5000 ms, after which it kills the process; the run
  is then cancelled all the same). Runs that complete, fail or are
  cancelled through the API leave the supervisor with `:normal` or a
  `{:shutdown, _}` reason, which it does not report as errors. The
  outcome of a run that has ended stays readable by id for the retention
  window (`CouncilEx.RunServer.state/2`, `CouncilEx.await/2`).
  """
  use DynamicSupervisor

  alias CouncilEx.RunServer

  # the registry a group's runs default to, kept in its process dictionary
  @registry_key {__MODULE__, :registry}

  @doc """
  Starts a supervisor of runs. Options: `:name` (a name for
  `GenServer.start_link/3`, needed to reach it by name), `:registry` (the
  registry of the runs started through `start_link/4` when they name
  none; default `CouncilEx.RunServer.default_registry/0`), `:max_children`
  (as `DynamicSupervisor.init/1`; more runs give `{:error, :max_children}`).
  """
  @spec start_link(keyword) :: Supervisor.on_start()
  def start_link(opts \\ []) when is_list(opts) do
    {gen_opts, opts} = Keyword.split(opts, [:name])
    DynamicSupervisor.start_link(__MODULE__, opts, gen_opts)
  end

  @doc """
  Starts a run of `council` on `input` as a child of `sup`, linked to the
  supervisor and not to the caller. `opts` are those of
  `CouncilEx.start/3` (`:run_id`, `:registry`, `:user_opts`, `:callers`,
  `subscribe: true` which subscribes the caller) and are validated the
  same way, before anything is started.

  Returns `{:ok, pid}` or `{:error, reason}`: `{:already_started, pid}`
  when a running run has that run id, `:max_children`, or any error of
  `CouncilEx.start/3`.
  """
  @spec start_link(Supervisor.supervisor(), CouncilEx.council(), term, keyword) ::
          {:ok, pid} | {:error, term}
  def start_link(sup, council, input, opts \\ []) do
    opts =
      if Keyword.keyword?(opts),
        do: Keyword.put_new_lazy(opts, :registry, fn -> registry(sup) end),
        else: opts

    CouncilEx.__start__(council, input, opts, &start_spec(sup, RunServer.checked_child_spec(&1)))
  end

  @doc """
  Starts a run under `sup` from the options of
  `CouncilEx.RunServer.start_link/1` (`:run_id`, `:council`, `:spec`,
  `:input`, ...): `DynamicSupervisor.start_child/2` with
  `{CouncilEx.RunServer, run_opts}`, which you may also call yourself.
  """
  @spec start_child(Supervisor.supervisor(), keyword) ::
          {:ok, pid} | {:error, term}
  def start_child(sup, run_opts), do: start_spec(sup, {RunServer, run_opts})

  defp start_spec(sup, child_spec) do
    case DynamicSupervisor.start_child(sup, child_spec) do
      {:ok, pid} -> {:ok, pid}
      {:ok, pid, _info} -> {:ok, pid}
      :ignore -> {:error, :ignore}
      {:error, _} = error -> error
    end
  end

  @doc """
  Terminates every run of `sup` (`DynamicSupervisor.terminate_child/2` on
  each): each is cancelled and has exited, its subscribers told, when
  this returns `:ok`.
  """
  @spec terminate_all(Supervisor.supervisor()) :: :ok
  def terminate_all(sup) do
    for {_, pid, _, _} <- DynamicSupervisor.which_children(sup), is_pid(pid) do
      DynamicSupervisor.terminate_child(sup, pid)
    end

    :ok
  end

  @doc "A child spec (`type: :supervisor`; id: the `:name` option, else this module)."
  @spec child_spec(keyword) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: Keyword.get(opts, :name, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      type: :supervisor
    }
  end

  # -------------------------------------------- conveniences of the group

  @doc "`start_link/4` under its former name."
  @spec start_run(Supervisor.supervisor(), CouncilEx.council(), term, keyword) ::
          {:ok, pid} | {:error, term}
  def start_run(sup, council, input, opts \\ []), do: start_link(sup, council, input, opts)

  @doc """
  The group's runs as `{run_id, pid}` pairs (`DynamicSupervisor.which_children/1`
  with each run's id; a run that ends meanwhile is left out).
  """
  @spec which_runs(Supervisor.supervisor()) :: [{binary, pid}]
  def which_runs(sup) do
    for {_, pid, _, _} <- DynamicSupervisor.which_children(sup),
        is_pid(pid),
        id <- [run_id(pid)],
        id != nil,
        do: {id, pid}
  end

  @doc "How many runs of the group are alive (`DynamicSupervisor.count_children/1`'s `:active`)."
  @spec count_runs(Supervisor.supervisor()) :: non_neg_integer
  def count_runs(sup), do: DynamicSupervisor.count_children(sup).active

  @doc """
  Terminates one run of the group (`DynamicSupervisor.terminate_child/2`):
  `:ok`, or `{:error, :not_found}` when it is not one of them.
  """
  @spec terminate_run(Supervisor.supervisor(), pid) :: :ok | {:error, :not_found}
  def terminate_run(sup, pid), do: DynamicSupervisor.terminate_child(sup, pid)

  @doc """
  The default registry of the runs of `sup` (its `:registry` option); the
  application's default for a supervisor of another node.
  """
  @spec registry(Supervisor.supervisor()) :: atom | binary
  def registry(sup) do
    with pid when is_pid(pid) and node(pid) == node() <- GenServer.whereis(sup),
         {:dictionary, dict} <- Process.info(pid, :dictionary),
         {_, registry} <- List.keyfind(dict, @registry_key, 0) do
      registry
    else
      _ -> RunServer.default_registry()
    end
  end

  # ------------------------------------------------------------- callback

  @impl true
  def init(opts) do
    registry = RunServer.registry!(Keyword.take(opts, [:registry]))
    Process.put(@registry_key, registry)

    DynamicSupervisor.init(
      strategy: :one_for_one,
      max_children: Keyword.get(opts, :max_children, :infinity)
    )
  end

  defp run_id(pid) do
    RunServer.run_id(pid)
  catch
    :exit, _ -> nil
  end
end
