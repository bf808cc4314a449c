defmodule CouncilEx.Node do
  @moduledoc """
  Starts and watches the C nodes that serve council runs: one node (the
  default), or a pool of them behind the same API (`CouncilEx.Pool`).

  Runs under the application supervisor. On start it makes this VM a
  distributed node if it is not one yet (short names; starting `epmd -daemon
  -address 127.0.0.1` when no epmd answers), then runs one
  `CouncilEx.Pool.Member` per C node, which either

    * **managed**: starts `priv/council_node` under a port with a unique
      `--sname` (kept across its restarts) and `--cookie-file` (a 0600
      temporary file holding this VM's cookie, removed once the node is
      ready; the cookie is never on a command line), waits for its
      readiness line `council_node ready NAME@HOST port=P creation=C`,
      connects and monitors it, forwards its log lines (`[level] message`)
      to `Logger`, and restarts it with exponential backoff when it dies; or
    * **external**: only connects to a node somebody else runs and monitors
      it, reconnecting with backoff.

  Which nodes (application env of `:council_ex`, one of):

    * nothing: one managed node;
    * `node: :"council@host"`: that one external node;
    * `nodes: [:"council@host1", :"council@host2"]`: a pool of external
      nodes;
    * `pool_size: n`: a pool of `n` managed nodes on this machine.

  Runs on a node that dies end for their callers with `:noconnection`; new
  runs go to the nodes still up (`CouncilEx.Pool` says where), and a node
  that comes back takes its share of new runs again. At run time:
  `add/1`, `remove/1`, `drain/1`, `undrain/1`, `reload/0`, `status/0`.

  Other configuration (application env of `:council_ex`, or environment):

    * `COUNCIL_NODE` (env) or `:executable` - the C node binary (default
      `council_node` in the application's priv dir,
      `Application.app_dir(:council_ex, "priv")`, where `mix compile`
      builds it), e.g. the ASan build for tests.
    * `:node_args` - extra command-line arguments for managed nodes.
    * `:run_retention_ms` - how long a finished run stays readable (ms,
      default 300000, the C node's default): passed to managed nodes as
      `--retention-ms`, and used by `CouncilEx.RunIndex`, so that the
      library and the nodes agree (see `retention_ms/0`). External nodes
      must be started with the same `--retention-ms` by whoever runs them.
    * `:registered_name` - the service's registered name (default
      `:council_ex`; passed as `--registered-name` to managed nodes).
    * `:node_wait_timeout` - how long API calls wait for a node (ms,
      default 15000).
    * `:providers` - defaults and API keys of the model providers (see
      `CouncilEx.Providers`): a literal key there is put into the managed
      nodes' environment when they start.

      iex> {:ok, node} = CouncilEx.Node.await()
      iex> GenServer.call({:council_ex, node}, :ping)
      :pong
  """
  use GenServer
  require Logger

  alias CouncilEx.Pool
  alias CouncilEx.Pool.Member

  # The C node runs under this shell wrapper: it reports the node's OS pid,
  # and kills the node when our end of the port closes (also when this VM
  # dies without running terminate/2), so no node outlives its VM.
  @wrapper ~S"""
  exec 3<&0
  "$@" </dev/null &
  child=$!
  echo "council_node_pid $child"
  trap 'kill -TERM $child 2>/dev/null' TERM INT HUP
  ( cat <&3 >/dev/null 2>&1; kill -TERM $child 2>/dev/null ) >/dev/null 2>&1 &
  watcher=$!
  exec 3<&-
  while :; do
    wait $child
    status=$?
    kill -0 $child 2>/dev/null || break
  done
  kill $watcher 2>/dev/null
  exit $status
  """

  @doc false
  # The wrapper above, for tests that run a C node of their own the same way.
  @spec wrapper_script() :: String.t()
  def wrapper_script, do: @wrapper

  @doc "Starts the manager (normally done by the application)."
  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "A child spec with a 10 s shutdown (time to stop the C nodes cleanly)."
  @spec child_spec(keyword) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}, shutdown: 10_000}
  end

  @doc """
  The first C node of the pool that is up (in the order of the
  configuration, then of `add/1`), else `nil`. Never blocks.
  """
  @spec current() :: node | nil
  def current do
    case Pool.view().up do
      [node | _] -> node
      [] -> nil
    end
  end

  @doc """
  A C node that is up (the first, as `current/0`), waiting up to `timeout`
  ms for one. When the manager starts, it answers once every node of the
  pool has had its first try (up or not), so that placement starts from
  the whole pool. `{:error, :unavailable}` when none is up in time (or the
  binary is missing).
  """
  @spec await(timeout) :: {:ok, node} | {:error, :unavailable}
  def await(timeout \\ wait_timeout()) do
    case Pool.view() do
      %{ready: true, up: [node | _]} ->
        {:ok, node}

      _ ->
        try do
          GenServer.call(__MODULE__, {:await, timeout}, :infinity)
        catch
          :exit, _ -> {:error, :unavailable}
        end
    end
  end

  @doc "The OS pid of the first managed C node (nil when external or not running)."
  @spec os_pid() :: non_neg_integer | nil
  def os_pid, do: info().os_pid

  @doc "The OS pid of the managed C node `node` (nil when external, not running or unknown)."
  @spec os_pid(node) :: non_neg_integer | nil
  def os_pid(node) do
    case Enum.find(status(stats: false), &(&1.node == node)) do
      %{os_pid: os_pid} -> os_pid
      nil -> nil
    end
  end

  @doc """
  Sends `request` to the C node service (`:council_ex`, see
  docs/protocol.md) of the node that should answer it, waiting for a node
  first: a request about a run (`{:whereis | :state | :result | :cancel,
  registry, run_id}`, a start, a subscription to a run's topic) goes to
  the run's node (`CouncilEx.Pool`), any other to `current/0`. A lost or
  missing node gives `{:error, :noconnection}` (or `{:error,
  :unavailable}` when none came up in time); a slow one
  `{:error, :timeout}`.
  """
  @spec call(term, timeout) :: term
  def call(request, timeout \\ 15_000) do
    with {:ok, _node} <- await(), do: Pool.call(request, timeout)
  end

  @doc "The registered name of the C node's service (default `:council_ex`)."
  @spec service_name() :: atom
  def service_name, do: Application.get_env(:council_ex, :registered_name, :council_ex)

  @doc false
  # What the exit of a call reads as: the C node's table
  # (CouncilEx.Schema.call_exit/1).
  @spec exit_reason(term) :: atom | term
  defdelegate exit_reason(reason), to: CouncilEx.Schema, as: :call_exit

  @doc false
  # Starts check the other nodes for their run id for the retention
  # window from now (CouncilEx.Pool: a run was placed away from its id's
  # first node).
  @spec unsettle() :: :ok
  def unsettle, do: GenServer.call(__MODULE__, :unsettle)

  @doc """
  Information about the first node of the pool (the only one, unless a
  pool is configured): mode (`:managed` or `:external`), status
  (`:starting`, `:up`, `:down`, `:unavailable`), node, os_pid, restarts.
  `status/0` has every node's.
  """
  @spec info() :: map
  def info do
    case GenServer.call(__MODULE__, :members) do
      [entry | _] -> Map.take(entry, [:mode, :status, :node, :os_pid, :restarts])
      [] -> %{mode: nil, status: :down, node: nil, os_pid: nil, restarts: 0}
    end
  end

  @typedoc "One node of the pool as `status/0` reports it."
  @type node_status :: %{
          node: node | nil,
          mode: :managed | :external,
          status: :starting | :up | :down | :unavailable,
          draining: boolean,
          os_pid: non_neg_integer | nil,
          restarts: non_neg_integer,
          runs_alive: non_neg_integer | nil,
          runs: non_neg_integer | nil,
          local_runs: [{binary, binary}]
        }

  @doc """
  Every node of the pool, in order: its name (nil for a managed node
  that has not come up yet), mode, status, whether it is draining, OS pid
  and restarts (managed), and from the node's own `:stats` (nil when it
  does not answer within 5 s, or with `stats: false`): `runs_alive` (its
  live runs: the load that least-loaded placement reads) and `runs` (live
  and retained); and `local_runs`, the live runs on it that this BEAM node
  started, as `{registry, run_id}` (`CouncilEx.RunIndex`; the node's own
  counts include every BEAM node's).
  """
  @spec status(keyword) :: [node_status]
  def status(opts \\ []) do
    infos = GenServer.call(__MODULE__, :members)

    stats =
      if Keyword.get(opts, :stats, true),
        do: Pool.stats(for(%{status: :up, node: n} <- infos, do: n), 5_000),
        else: %{}

    local = Enum.group_by(CouncilEx.RunIndex.live(), &node(elem(&1, 0)), &Tuple.delete_at(&1, 0))

    for info <- infos do
      s = Map.get(stats, info.node, %{})

      info
      |> Map.take([:node, :mode, :status, :draining, :os_pid, :restarts])
      |> Map.merge(%{
        runs_alive: Map.get(s, :runs_alive),
        runs: Map.get(s, :runs),
        local_runs: if(info.node, do: Map.get(local, info.node, []), else: [])
      })
    end
  end

  @doc """
  Adds a node to the pool at run time: `:managed` starts one more managed
  node on this machine, a node name connects to that external node.
  Waits up to `timeout` ms for it to be up: `{:ok, node}`, or
  `{:error, :unavailable}` (the node stays in the pool and keeps being
  tried, as any member); `{:error, :already_member}` for a name already
  in the pool, `{:error, {:bad_node, what}}` for an atom that is no node
  name. It takes new runs at once: the ids it now ranks first for
  go to it (about 1/N of them; runs already elsewhere stay there and are
  still found, see `CouncilEx.Pool`).
  """
  @spec add(:managed | node, timeout) ::
          {:ok, node} | {:error, :unavailable | :already_member | {:bad_node, atom}}
  def add(what, timeout \\ wait_timeout()) when is_atom(what) do
    GenServer.call(__MODULE__, {:add, what, timeout}, :infinity)
  end

  @doc """
  Takes `node` out of the pool at once: no new runs, no lookups. A managed
  node is stopped (SIGTERM: its runs are cancelled, their callers get
  `run_cancelled`); an external one is only no longer used (its runs go
  on there, reachable by pid). Drain it first (`drain/1`, then wait for
  `status/0` to show no live runs) to let its runs finish.
  `{:error, :not_found}` for a node not in the pool.
  """
  @spec remove(node) :: :ok | {:error, :not_found}
  def remove(node) when is_atom(node), do: GenServer.call(__MODULE__, {:remove, node}, 30_000)

  @doc """
  Drains `node`: it takes no new runs (they go to the next node in their
  order), while its runs go on and are found by id as before. For this
  BEAM node only: every BEAM node that shares the pool drains it for
  itself (e.g. `:erpc.multicall(nodes, CouncilEx.Node, :drain, [node])`).
  `undrain/1` ends it. `{:error, :not_found}` for a node not in the pool.
  """
  @spec drain(node) :: :ok | {:error, :not_found}
  def drain(node) when is_atom(node), do: GenServer.call(__MODULE__, {:drain, node, true})

  @doc "Ends `drain/1`: `node` takes new runs again."
  @spec undrain(node) :: :ok | {:error, :not_found}
  def undrain(node) when is_atom(node), do: GenServer.call(__MODULE__, {:drain, node, false})

  @doc """
  Reads the pool's configuration again (`:node`, `:nodes`, `:pool_size`)
  and makes the pool match it, at run time: external nodes it no longer
  names are taken out (as `remove/1`), new ones added; managed nodes are
  added, or removed newest first (stopped, as `remove/1`), until there are
  as many as it says. Returns at once (`status/0` shows the new nodes
  coming up): `:ok`, or `{:error, %ArgumentError{}}` for a bad
  configuration, which leaves the pool as it is.
  """
  @spec reload() :: :ok | {:error, ArgumentError.t()}
  def reload, do: GenServer.call(__MODULE__, :reload, 60_000)

  @doc """
  How long the C node keeps a finished run readable, in ms:
  `config :council_ex, :run_retention_ms` when set, else the value of a
  `--retention-ms` in `:node_args`, else 300000 (the C node's default). A
  managed node is started with it (`--retention-ms`); an external node
  must be given the same value. Raises `ArgumentError` when the setting is
  not a positive integer (the C node refuses 0).
  """
  @spec retention_ms() :: pos_integer
  def retention_ms do
    retention_ms(
      Application.fetch_env(:council_ex, :run_retention_ms),
      Application.get_env(:council_ex, :node_args, [])
    )
  end

  @doc false
  # retention_ms/0 of a `:run_retention_ms` (`{:ok, value}` or `:error`)
  # and a `:node_args` list.
  @spec retention_ms({:ok, term} | :error, [term]) :: pos_integer
  def retention_ms(run_retention, node_args) do
    case run_retention do
      {:ok, nil} ->
        retention_ms(:error, node_args)

      {:ok, ms} when is_integer(ms) and ms > 0 ->
        ms

      {:ok, other} ->
        raise ArgumentError,
              "config :council_ex, :run_retention_ms must be a positive integer (ms), got: #{inspect(other)}"

      :error ->
        case arg_value(node_args, "--retention-ms") do
          nil ->
            300_000

          value ->
            case Integer.parse(value) do
              {ms, ""} when ms > 0 ->
                ms

              _ ->
                raise ArgumentError,
                      "--retention-ms in config :council_ex, :node_args must be a positive integer, got: #{inspect(value)}"
            end
        end
    end
  end

  @doc false
  # The command-line options of a managed node after its name and cookie
  # file: the service name (unless the default), `:node_args`, and
  # `--retention-ms` from `retention_ms/0` (replacing any in `:node_args`).
  @spec node_args() :: [binary]
  def node_args do
    extra = Enum.map(Application.get_env(:council_ex, :node_args, []), &to_string/1)
    retention = retention_ms()

    case arg_value(extra, "--retention-ms") do
      nil ->
        :ok

      value ->
        if value != Integer.to_string(retention) do
          Logger.warning(
            "council_ex: :node_args has --retention-ms #{value}, :run_retention_ms is #{retention}: the C node is started with #{retention}"
          )
        end
    end

    extra = drop_arg(extra, "--retention-ms")

    name =
      if service_name() == :council_ex,
        do: [],
        else: ["--registered-name", Atom.to_string(service_name())]

    allow = Enum.flat_map(exec_allow(), &["--exec-allow", &1])
    name ++ extra ++ allow ++ ["--retention-ms", Integer.to_string(retention)]
  end

  @doc """
  The programs `exec` members and exec tools may run:
  `config :council_ex, :exec_allow`, a list of paths, each a program or a
  directory of programs (expanded from the current directory), `[]` by
  default: no exec at all. A managed node gets them as `--exec-allow`, the
  NIF backend's context the same list; a spec naming another program is
  refused with `{:invalid_spec, "members[i].options.argv", "program not
  allowed"}`. Raises `ArgumentError` for a path that does not exist.
  """
  @spec exec_allow() :: [binary]
  def exec_allow do
    case Application.get_env(:council_ex, :exec_allow, []) do
      paths when is_list(paths) ->
        for p <- paths do
          path = if is_binary(p) or is_list(p), do: Path.expand(to_string(p)), else: nil

          unless path && File.exists?(path) do
            raise ArgumentError,
                  "config :council_ex, :exec_allow: #{inspect(p)} is not a path to a program or a directory"
          end

          path
        end

      other ->
        raise ArgumentError,
              "config :council_ex, :exec_allow must be a list of paths, got: #{inspect(other)}"
    end
  end

  # The value after the last `flag` in an argument list, or nil.
  defp arg_value(args, flag) do
    args
    |> Enum.map(&to_string/1)
    |> Enum.chunk_every(2, 1, :discard)
    |> Enum.reduce(nil, fn
      [^flag, value], _ -> value
      _, acc -> acc
    end)
  end

  defp drop_arg([flag, _value | rest], flag), do: drop_arg(rest, flag)
  defp drop_arg([other | rest], flag), do: [other | drop_arg(rest, flag)]
  defp drop_arg([], _flag), do: []

  @doc false
  @spec wait_timeout() :: timeout
  def wait_timeout, do: Application.get_env(:council_ex, :node_wait_timeout, 15_000)

  @doc false
  # The pool the configuration names: `:managed` or `{:external, node}`
  # per node. Raises ArgumentError for a bad or ambiguous configuration.
  @spec pool_config() :: [:managed | {:external, node}]
  def pool_config do
    node = Application.get_env(:council_ex, :node)
    nodes = Application.get_env(:council_ex, :nodes)
    size = Application.get_env(:council_ex, :pool_size)

    cond do
      Enum.count([node, nodes, size], &(&1 != nil)) > 1 ->
        raise ArgumentError,
              "config :council_ex: set one of :node, :nodes and :pool_size, not several"

      node != nil ->
        [{:external, node_name!(node, :node)}]

      nodes != nil ->
        unless is_list(nodes) and nodes != [] do
          raise ArgumentError,
                "config :council_ex, :nodes must be a non-empty list of node names, got: #{inspect(nodes)}"
        end

        nodes |> Enum.map(&node_name!(&1, :nodes)) |> Enum.uniq() |> Enum.map(&{:external, &1})

      size != nil ->
        unless is_integer(size) and size >= 1 do
          raise ArgumentError,
                "config :council_ex, :pool_size must be a positive integer, got: #{inspect(size)}"
        end

        List.duplicate(:managed, size)

      true ->
        [:managed]
    end
  end

  defp node_name!(name, key) do
    if is_atom(name) and name not in [nil, true, false] and
         String.contains?(Atom.to_string(name), "@") do
      name
    else
      raise ArgumentError,
            "config :council_ex, #{inspect(key)}: expected node names like :\"council@host\", got: #{inspect(name)}"
    end
  end

  # ------------------------------------------------------------- callbacks

  # State:
  #   members: member pid => %{spec, draining} and the member's last report
  #            (mode, status, node, os_pid, restarts)
  #   order:   member pids, oldest first (the order of current/0, status/0)
  #   initial: members that have not reported yet since the manager started
  #   waiters: {from, timer, :any | member pid}
  #   unsettled_until: see CouncilEx.Pool (monotonic ms)

  @impl true
  def init(_opts) do
    Process.flag(:trap_exit, true)
    # Start distribution now, synchronously: doing it later, while code is
    # being compiled (mix run, mix test), breaks the compiler's pids.
    case ensure_distributed() do
      :ok ->
        :ok

      {:error, reason} ->
        Logger.warning("council_ex: cannot start distribution: #{inspect(reason)}")
    end

    state = %{members: %{}, order: [], initial: MapSet.new(), waiters: [], unsettled_until: nil}
    state = Enum.reduce(pool_config(), state, &start_member(&2, &1))
    {:ok, publish(%{state | initial: MapSet.new(state.order)})}
  end

  @impl true
  def handle_call({:await, timeout}, from, state) do
    {:noreply, state |> add_waiter(from, timeout, :any) |> reply_waiters()}
  end

  def handle_call(:unsettle, _from, state) do
    {:reply, :ok, state |> unsettle() |> publish()}
  end

  def handle_call(:members, _from, state) do
    {:reply, Enum.map(state.order, &state.members[&1]), state}
  end

  def handle_call({:add, what, timeout}, from, state) do
    known = Enum.any?(state.members, fn {_, e} -> e.node == what or e.spec == {:external, what} end)

    cond do
      what != :managed and known ->
        {:reply, {:error, :already_member}, state}

      what != :managed and not match?({:ok, _}, safe_node_name(what)) ->
        {:reply, {:error, {:bad_node, what}}, state}

      true ->
        spec = if what == :managed, do: :managed, else: {:external, what}
        state = start_member(state, spec)
        pid = List.last(state.order)

        state =
          state
          |> unsettle()
          |> publish()
          |> add_waiter(from, timeout, pid)
          |> reply_waiters()

        {:noreply, state}
    end
  end

  def handle_call({:remove, node}, _from, state) do
    case member_of(state, node) do
      nil ->
        {:reply, {:error, :not_found}, state}

      pid ->
        {:reply, :ok, state |> drop_member(pid) |> unsettle() |> publish() |> reply_waiters()}
    end
  end

  def handle_call(:reload, _from, state) do
    case read_config() do
      {:ok, wanted} ->
        specs = Enum.map(state.order, &{&1, state.members[&1].spec})
        externals = for {pid, {:external, node}} <- specs, do: {pid, node}
        managed = for {pid, {:managed, _}} <- specs, do: pid
        want = for {:external, node} <- wanted, do: node
        excess = length(managed) - Enum.count(wanted, &(&1 == :managed))

        drop =
          for({pid, node} <- externals, node not in want, do: pid) ++
            Enum.take(Enum.reverse(managed), max(excess, 0))

        add =
          Enum.map(want -- Enum.map(externals, &elem(&1, 1)), &{:external, &1}) ++
            List.duplicate(:managed, max(-excess, 0))

        state = Enum.reduce(drop, state, &drop_member(&2, &1))
        state = Enum.reduce(add, state, &start_member(&2, &1))
        state = if drop == [] and add == [], do: state, else: unsettle(state)
        {:reply, :ok, state |> publish() |> reply_waiters()}

      error ->
        {:reply, error, state}
    end
  end

  def handle_call({:drain, node, draining}, _from, state) do
    case member_of(state, node) do
      nil ->
        {:reply, {:error, :not_found}, state}

      pid ->
        state = put_in(state.members[pid].draining, draining)
        {:reply, :ok, state |> unsettle() |> publish()}
    end
  end

  @impl true
  def handle_info({:member, pid, info}, state) do
    case state.members do
      %{^pid => entry} ->
        was_up = entry.status == :up
        what = info.status
        entry = Map.merge(entry, %{info | node: info.node || entry.node})
        state = %{state | members: Map.put(state.members, pid, entry)}
        ready = MapSet.size(state.initial) == 0

        state = if ready and was_up != (what == :up), do: unsettle(state), else: state

        # a member has had its first try once it is up, down or unavailable
        state =
          if what == :starting,
            do: state,
            else: %{state | initial: MapSet.delete(state.initial, pid)}

        {:noreply, state |> publish() |> reply_waiters()}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:await_timeout, from}, state) do
    case Enum.split_with(state.waiters, fn {f, _, _} -> f == from end) do
      {[_ | _], rest} ->
        GenServer.reply(from, {:error, :unavailable})
        {:noreply, %{state | waiters: rest}}

      {[], _} ->
        {:noreply, state}
    end
  end

  # A member that crashed: another one for the same node (same name),
  # which restarts a managed node.
  def handle_info({:EXIT, pid, reason}, state) when is_map_key(state.members, pid) do
    Logger.error(
      "council_ex: the manager of C node #{state.members[pid].node} exited: #{inspect(reason)}"
    )

    {entry, members} = Map.pop(state.members, pid)
    {:ok, new} = Member.start_link(entry.spec)
    members = Map.put(members, new, %{entry | status: :starting, os_pid: nil})
    order = Enum.map(state.order, &if(&1 == pid, do: new, else: &1))

    waiters =
      Enum.map(state.waiters, fn
        {from, tref, ^pid} -> {from, tref, new}
        other -> other
      end)

    state = %{state | members: members, order: order, waiters: waiters}
    state = if entry.status == :up, do: unsettle(state), else: state
    {:noreply, publish(state)}
  end

  def handle_info({:EXIT, _other, _reason}, state), do: {:noreply, state}
  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    Pool.erase_view()
    # all at once (each stops its node), within the child spec's shutdown
    refs = Enum.map(state.order, &Process.monitor/1)
    Enum.each(state.order, &Process.exit(&1, :shutdown))

    for ref <- refs do
      receive do
        {:DOWN, ^ref, :process, _, _} -> :ok
      after
        8_000 -> :ok
      end
    end

    :ok
  end

  defp start_member(state, :managed) do
    start_member(state, {:managed, "council_#{System.pid()}_#{System.unique_integer([:positive])}"})
  end

  defp start_member(state, spec) do
    {:ok, pid} = Member.start_link(spec)

    {mode, node} =
      case spec do
        {:external, node} -> {:external, node}
        {:managed, _} -> {:managed, nil}
      end

    entry = %{
      spec: spec,
      mode: mode,
      node: node,
      status: :starting,
      os_pid: nil,
      restarts: 0,
      draining: false
    }

    %{state | members: Map.put(state.members, pid, entry), order: state.order ++ [pid]}
  end

  defp read_config do
    {:ok, pool_config()}
  rescue
    e in ArgumentError -> {:error, e}
  end

  # Stops a member (and its managed node) and forgets it.
  defp drop_member(state, pid) do
    Member.stop(pid)
    %{state | members: Map.delete(state.members, pid), order: state.order -- [pid]}
  end

  defp member_of(state, node) do
    Enum.find(state.order, fn pid -> state.members[pid].node == node end)
  end

  defp safe_node_name(name) do
    {:ok, node_name!(name, :add)}
  rescue
    ArgumentError -> :error
  end

  # A change of which nodes take runs, once the pool has started: for a
  # while, starts make sure that no other node has the run id (see
  # CouncilEx.Pool).
  defp unsettle(state) do
    if MapSet.size(state.initial) == 0 do
      window =
        try do
          retention_ms()
        rescue
          ArgumentError -> 300_000
        end

      %{state | unsettled_until: System.monotonic_time(:millisecond) + window}
    else
      state
    end
  end

  defp publish(state) do
    entries = Enum.map(state.order, &state.members[&1])
    up = for %{status: :up, node: node} <- entries, do: node

    Pool.put_view(%{
      ready: MapSet.size(state.initial) == 0,
      up: up,
      accepting: for(%{status: :up, node: node, draining: false} <- entries, do: node),
      members: length(entries),
      unsettled_until: state.unsettled_until
    })

    state
  end

  defp add_waiter(state, from, timeout, target) do
    tref =
      if timeout == :infinity,
        do: nil,
        else: Process.send_after(self(), {:await_timeout, from}, timeout)

    %{state | waiters: [{from, tref, target} | state.waiters]}
  end

  # Answers the waiters whose answer is known: `:any` once the pool has
  # started and a node is up (or every node's binary is missing), a
  # member once it is up (or gone).
  defp reply_waiters(state) do
    view = Pool.view()
    all_unavailable = Enum.all?(state.members, fn {_, e} -> e.status == :unavailable end)

    waiters =
      Enum.reject(state.waiters, fn {from, tref, target} ->
        reply =
          case target do
            :any ->
              cond do
                view.ready and view.up != [] -> {:ok, hd(view.up)}
                view.ready and all_unavailable -> {:error, :unavailable}
                true -> nil
              end

            pid ->
              case state.members do
                %{^pid => %{status: :up, node: node}} -> {:ok, node}
                %{^pid => _} -> nil
                _ -> {:error, :unavailable}
              end
          end

        if reply do
          if tref, do: Process.cancel_timer(tref)
          GenServer.reply(from, reply)
          true
        else
          false
        end
      end)

    %{state | waiters: waiters}
  end

  @doc """
  The Logger level and message of a C node log line (`[level] message`);
  other lines are `:info`.

      iex> CouncilEx.Node.parse_log_line("[warn] slow subscriber cut off")
      {:warning, "slow subscriber cut off"}
  """
  @spec parse_log_line(binary) :: {Logger.level(), binary}
  def parse_log_line("[" <> rest = line) do
    case String.split(rest, "] ", parts: 2) do
      [level, message] -> {log_level(level), message}
      _ -> {:info, line}
    end
  end

  def parse_log_line(line), do: {:info, line}

  @doc false
  @spec ensure_distributed() :: :ok | {:error, term}
  def ensure_distributed do
    if Node.alive?() do
      :ok
    else
      with :ok <- ensure_epmd() do
        name = :"council_ex_#{System.pid()}_#{System.unique_integer([:positive])}"

        case Node.start(name, :shortnames) do
          {:ok, _} -> :ok
          {:error, {:already_started, _}} -> :ok
          {:error, reason} -> {:error, reason}
        end
      end
    end
  end

  defp ensure_epmd do
    case :erl_epmd.names() do
      {:ok, _} ->
        :ok

      {:error, _} ->
        case System.find_executable("epmd") do
          nil ->
            {:error, :no_epmd}

          epmd ->
            System.cmd(epmd, ["-daemon", "-address", "127.0.0.1"], stderr_to_stdout: true)
            wait_epmd(40)
        end
    end
  end

  defp wait_epmd(0), do: {:error, :epmd_not_answering}

  defp wait_epmd(n) do
    case :erl_epmd.names() do
      {:ok, _} -> :ok
      _ -> Process.sleep(50) && wait_epmd(n - 1)
    end
  end

  @doc false
  @spec executable() :: Path.t()
  def executable do
    System.get_env("COUNCIL_NODE") || Application.get_env(:council_ex, :executable) ||
      default_executable()
  end

  # The application's own priv dir (_build/ENV/lib/council_ex/priv, or
  # lib/council_ex-VSN/priv in a release), never the current directory: a
  # user's project has no priv/council_node of its own. The source tree's
  # priv/ only when the code server does not know the application.
  @source_priv Path.expand("../../priv", __DIR__)
  defp default_executable do
    case :code.priv_dir(:council_ex) do
      {:error, _} -> Path.join(@source_priv, "council_node")
      dir -> Path.join(List.to_string(dir), "council_node")
    end
  end

  defp log_level(level) do
    case String.downcase(level) do
      l when l in ["debug", "trace"] -> :debug
      l when l in ["info"] -> :info
      l when l in ["notice"] -> :notice
      l when l in ["warn", "warning"] -> :warning
      l when l in ["error", "err"] -> :error
      l when l in ["critical", "crit", "fatal"] -> :critical
      l when l in ["alert"] -> :alert
      l when l in ["emergency", "emerg"] -> :emergency
      _ -> :info
    end
  end
end
