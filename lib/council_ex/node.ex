defmodule CouncilEx.Node do
  @moduledoc """
  Starts, watches and restarts the C node that serves council runs.

  Runs under the application supervisor. On start it makes this VM a
  distributed node if it is not one yet (short names; starting `epmd -daemon
  -address 127.0.0.1` when no epmd answers), then either

    * **managed** (default): starts `priv/council_node` under a port with a
      unique `--sname` and `--cookie-file` (a 0600 temporary file holding this
      VM's cookie, removed once the node is ready; the cookie is never on a
      command line), waits for its readiness line
      `council_node ready NAME@HOST port=P creation=C`, connects and monitors
      it, forwards its log lines (`[level] message`) to `Logger`, and restarts
      it with exponential backoff when it dies; or
    * **external**: with `config :council_ex, node: :"council@host"`, only
      connects to that node and monitors it, reconnecting with backoff.

  Runs on a node that dies end for their callers with `:noconnection`; new
  runs go to the restarted node.

  Configuration (application env of `:council_ex`, or environment):

    * `COUNCIL_NODE` (env) or `:executable` - the C node binary (default
      `council_node` in the application's priv dir,
      `Application.app_dir(:council_ex, "priv")`, where `mix compile`
      builds it), e.g. the ASan build for tests.
    * `:node` - an external C node to use instead of starting one.
    * `:node_args` - extra command-line arguments for the managed node.
    * `:run_retention_ms` - how long a finished run stays readable (ms,
      default 300000, the C node's default): passed to a managed node as
      `--retention-ms`, and used by `CouncilEx.RunIndex`, so that the
      library and the node agree (see `retention_ms/0`). An external node
      must be started with the same `--retention-ms` by whoever runs it.
    * `:registered_name` - the service's registered name (default
      `:council_ex`; passed as `--registered-name` to a managed node).
    * `:node_wait_timeout` - how long API calls wait for the node (ms,
      default 15000).
    * `:providers` - defaults and API keys of the model providers (see
      `CouncilEx.Providers`): a literal key there is put into the managed
      node's environment when it starts.

      iex> {:ok, node} = CouncilEx.Node.await()
      iex> GenServer.call({:council_ex, node}, :ping)
      :pong
  """
  use GenServer
  require Logger

  @pt_key {__MODULE__, :node}
  @ready_timeout 15_000
  @backoff_min 100
  @backoff_max 5_000

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

  @doc "A child spec with a 10 s shutdown (time to stop the C node cleanly)."
  @spec child_spec(keyword) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}, shutdown: 10_000}
  end

  @doc "The C node's name when it is connected, else `nil`. Never blocks."
  @spec current() :: node | nil
  def current, do: :persistent_term.get(@pt_key, nil)

  @doc """
  The C node's name, waiting up to `timeout` ms for it to be up.
  `{:error, :unavailable}` when it is not up in time (or its binary is missing).
  """
  @spec await(timeout) :: {:ok, node} | {:error, :unavailable}
  def await(timeout \\ wait_timeout()) do
    case current() do
      nil ->
        try do
          GenServer.call(__MODULE__, {:await, timeout}, :infinity)
        catch
          :exit, _ -> {:error, :unavailable}
        end

      node ->
        {:ok, node}
    end
  end

  @doc "The OS pid of the managed C node (nil when external or not running)."
  @spec os_pid() :: non_neg_integer | nil
  def os_pid, do: GenServer.call(__MODULE__, :os_pid)

  @doc """
  Calls the C node's registered service (`:council_ex`, see
  docs/protocol.md) with `request`, waiting for the node first. A lost or
  missing node gives `{:error, :noconnection}` (or `{:error, :unavailable}`
  when it never came up in time); a slow one `{:error, :timeout}`.
  """
  @spec call(term, timeout) :: term
  def call(request, timeout \\ 15_000) do
    with {:ok, node} <- await() do
      try do
        GenServer.call({service_name(), node}, request, timeout)
      catch
        :exit, {reason, _} -> {:error, exit_reason(reason)}
      end
    end
  end

  @doc "The registered name of the C node's service (default `:council_ex`)."
  @spec service_name() :: atom
  def service_name, do: Application.get_env(:council_ex, :registered_name, :council_ex)

  @doc false
  @spec exit_reason(term) :: atom | term
  def exit_reason({:nodedown, _}), do: :noconnection
  def exit_reason(:noconnection), do: :noconnection
  def exit_reason(:timeout), do: :timeout
  def exit_reason(:noproc), do: :noproc
  def exit_reason(:normal), do: :noproc
  def exit_reason({:shutdown, _} = reason), do: reason
  def exit_reason(reason), do: reason

  @doc "Information about the manager: mode, status, node, os_pid, restarts."
  @spec info() :: map
  def info, do: GenServer.call(__MODULE__, :info)

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

    name ++ extra ++ ["--retention-ms", Integer.to_string(retention)]
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

  # ------------------------------------------------------------- callbacks

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

    state = %{
      mode: if(Application.get_env(:council_ex, :node), do: :external, else: :managed),
      node: nil,
      status: :starting,
      port: nil,
      os_pid: nil,
      cookie_file: nil,
      line: "",
      waiters: [],
      backoff: @backoff_min,
      gen: 0,
      restarts: 0,
      ready_timer: nil,
      last_problem: nil
    }

    {:ok, state, {:continue, :start}}
  end

  @impl true
  def handle_continue(:start, state), do: {:noreply, start_node(state)}

  @impl true
  def handle_call({:await, _timeout}, _from, %{status: :up, node: node} = state),
    do: {:reply, {:ok, node}, state}

  def handle_call({:await, _timeout}, _from, %{status: :unavailable} = state),
    do: {:reply, {:error, :unavailable}, state}

  def handle_call({:await, timeout}, from, state) do
    tref =
      if timeout == :infinity,
        do: nil,
        else: Process.send_after(self(), {:await_timeout, from}, timeout)

    {:noreply, %{state | waiters: [{from, tref} | state.waiters]}}
  end

  def handle_call(:os_pid, _from, state), do: {:reply, state.os_pid, state}

  def handle_call(:info, _from, state) do
    {:reply, Map.take(state, [:mode, :status, :node, :os_pid, :restarts]), state}
  end

  @impl true
  def handle_info({:await_timeout, from}, state) do
    case List.keytake(state.waiters, from, 0) do
      {{^from, _}, rest} ->
        GenServer.reply(from, {:error, :unavailable})
        {:noreply, %{state | waiters: rest}}

      nil ->
        {:noreply, state}
    end
  end

  def handle_info({port, {:data, {:eol, chunk}}}, %{port: port} = state) do
    line = state.line <> chunk
    {:noreply, handle_line(line, %{state | line: ""})}
  end

  def handle_info({port, {:data, {:noeol, chunk}}}, %{port: port} = state) do
    {:noreply, %{state | line: state.line <> chunk}}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    Logger.error("council_ex: C node #{state.node || "(starting)"} exited with status #{status}")
    {:noreply, node_down(%{state | port: nil, os_pid: nil}, {:exit_status, status})}
  end

  def handle_info({:EXIT, port, _reason}, %{port: port} = state) do
    {:noreply, node_down(%{state | port: nil}, :port_closed)}
  end

  def handle_info({:EXIT, _other, _reason}, state), do: {:noreply, state}

  def handle_info({:nodedown, node}, %{node: node, status: :up} = state) do
    Logger.error("council_ex: lost the connection to C node #{node}")
    {:noreply, node_down(state, :nodedown)}
  end

  def handle_info({:nodedown, _}, state), do: {:noreply, state}

  def handle_info({:ready_timeout, gen}, %{gen: gen, status: :starting} = state) do
    Logger.error("council_ex: C node did not report ready within #{@ready_timeout} ms")
    {:noreply, node_down(state, :ready_timeout)}
  end

  def handle_info({:restart, gen}, %{gen: gen} = state), do: {:noreply, start_node(state)}
  def handle_info({:ready_timeout, _}, state), do: {:noreply, state}
  def handle_info({:restart, _}, state), do: {:noreply, state}
  def handle_info({_port, {:data, _}}, state), do: {:noreply, state}
  def handle_info({_port, {:exit_status, _}}, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    :persistent_term.erase(@pt_key)
    stop_process(state)
    remove_cookie(state)
    :ok
  end

  # ------------------------------------------------------------- start/stop

  defp start_node(state) do
    state = %{state | gen: state.gen + 1, line: ""}

    case ensure_distributed() do
      :ok ->
        if state.mode == :external, do: connect_external(state), else: spawn_node(state)

      {:error, reason} ->
        problem(state, "cannot start distribution: #{inspect(reason)}")
        |> schedule_restart()
    end
  end

  defp connect_external(state) do
    node = Application.get_env(:council_ex, :node)

    if Node.connect(node) == true do
      up(%{state | node: node})
    else
      state
      |> problem("cannot connect to C node #{node}")
      |> Map.put(:status, :down)
      |> schedule_restart()
    end
  end

  defp spawn_node(state) do
    exe = executable()

    cond do
      not File.regular?(exe) ->
        state
        |> problem("C node binary #{exe} not found (`mix compile` builds it; see the README)")
        |> Map.put(:status, :unavailable)
        |> fail_waiters()
        |> schedule_restart()

      true ->
        sname = "council_#{System.pid()}_#{System.unique_integer([:positive])}"
        extra = node_args()
        cookie_file = write_cookie_file()

        port =
          open_port([
            :binary,
            :exit_status,
            :stderr_to_stdout,
            {:line, 65_536},
            args: [
              "-c",
              @wrapper,
              "council_node",
              exe,
              "--sname",
              sname,
              "--cookie-file",
              cookie_file | extra
            ]
          ])

        timer = Process.send_after(self(), {:ready_timeout, state.gen}, @ready_timeout)

        %{
          state
          | port: port,
            status: :starting,
            cookie_file: cookie_file,
            ready_timer: timer,
            node: nil
        }
    end
  end

  # The node's process gets the literal API keys of the configuration in
  # its environment (CouncilEx.Providers.node_env/0): they exist only in
  # the port's options here, never in this process's state. An error of
  # the spawn is raised again without its arguments, so that no crash
  # report carries a key.
  defp open_port(options) do
    env =
      try do
        CouncilEx.Providers.node_env()
      rescue
        # the library's own messages, which never show a key
        e in ArgumentError ->
          Logger.error("council_ex: C node started without configured keys: " <> e.message)
          []

        _ ->
          Logger.error("council_ex: C node started without configured keys: bad :providers")
          []
      end

    try do
      Port.open({:spawn_executable, "/bin/sh"}, [{:env, env} | options])
    rescue
      e -> raise RuntimeError, "council_ex: cannot spawn the C node: " <> Exception.message(e)
    end
  end

  defp handle_line("council_node_pid " <> pid, state) do
    case Integer.parse(pid) do
      {n, _} -> %{state | os_pid: n}
      :error -> state
    end
  end

  defp handle_line("council_node ready " <> rest, %{status: :starting} = state) do
    [name | _] = String.split(rest, " ", parts: 2)
    node = String.to_atom(name)
    cancel_timer(state.ready_timer)
    state = remove_cookie(%{state | ready_timer: nil})

    if connect(node, 20) do
      up(%{state | node: node})
    else
      Logger.error("council_ex: C node #{node} is ready but does not accept our connection")
      node_down(%{state | node: node}, :connect_failed)
    end
  end

  defp handle_line("", state), do: state

  defp handle_line(line, state) do
    {level, message} = parse_log_line(line)
    Logger.log(level, "council_node: " <> message)
    state
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

  defp connect(node, tries) do
    cond do
      Node.connect(node) == true -> true
      tries <= 1 -> false
      true -> Process.sleep(50) && connect(node, tries - 1)
    end
  end

  defp up(state) do
    Node.monitor(state.node, true)
    :persistent_term.put(@pt_key, state.node)
    # The first start is routine (debug, so that `mix run` prints nothing);
    # a node that comes back after a failure is worth an info line.
    level = if state.restarts == 0, do: :debug, else: :info
    Logger.log(level, "council_ex: C node #{state.node} is up")

    for {from, tref} <- state.waiters,
        do:
          (
            cancel_timer(tref)
            GenServer.reply(from, {:ok, state.node})
          )

    %{state | status: :up, waiters: [], backoff: @backoff_min, last_problem: nil}
  end

  defp node_down(%{status: status} = state, _why) when status in [:down, :unavailable], do: state

  defp node_down(state, _why) do
    :persistent_term.erase(@pt_key)
    if state.node, do: Node.monitor(state.node, false)
    cancel_timer(state.ready_timer)
    stop_process(state)
    state = remove_cookie(state)

    %{state | status: :down, port: nil, os_pid: nil, ready_timer: nil, restarts: state.restarts + 1}
    |> schedule_restart()
  end

  defp schedule_restart(state) do
    Process.send_after(self(), {:restart, state.gen}, state.backoff)
    %{state | backoff: min(state.backoff * 2, @backoff_max)}
  end

  defp fail_waiters(state) do
    for {from, tref} <- state.waiters,
        do:
          (
            cancel_timer(tref)
            GenServer.reply(from, {:error, :unavailable})
          )

    %{state | waiters: []}
  end

  defp problem(state, message) do
    if state.last_problem != message, do: Logger.warning("council_ex: " <> message)
    %{state | last_problem: message}
  end

  defp stop_process(state) do
    if state.os_pid,
      do: System.cmd("kill", ["-TERM", Integer.to_string(state.os_pid)], stderr_to_stdout: true)

    if state.port do
      try do
        Port.close(state.port)
      catch
        _, _ -> :ok
      end
    end
  end

  # ---------------------------------------------------------- distribution

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

  defp write_cookie_file do
    path =
      Path.join(
        System.tmp_dir!(),
        "council_ex_cookie_#{System.pid()}_#{System.unique_integer([:positive])}"
      )

    {:ok, fd} = :file.open(path, [:write, :exclusive, :raw, :binary])
    :ok = File.chmod(path, 0o600)
    :ok = :file.write(fd, Atom.to_string(Node.get_cookie()))
    :ok = :file.close(fd)
    path
  end

  defp remove_cookie(%{cookie_file: nil} = state), do: state

  defp remove_cookie(%{cookie_file: file} = state) do
    File.rm(file)
    %{state | cookie_file: nil}
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

  defp cancel_timer(nil), do: :ok
  defp cancel_timer(ref), do: Process.cancel_timer(ref)
end
