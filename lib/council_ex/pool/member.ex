defmodule CouncilEx.Pool.Member do
  @moduledoc """
  Starts, watches and restarts one C node of the pool (`CouncilEx.Node`
  runs one of these per node and restarts it if it crashes).

    * **managed**: starts `priv/council_node` under a port with this
      member's `--sname` (the same name on every restart, so that the node
      keeps its place in the rendezvous order of `CouncilEx.Pool.Placement`
      and other BEAM nodes that name it find it again) and `--cookie-file`
      (a 0600 temporary file holding this VM's cookie, removed once the node
      is ready; the cookie is never on a command line), waits for its
      readiness line `council_node ready NAME@HOST port=P creation=C`,
      connects and monitors it, forwards its log lines (`[level] message`)
      to `Logger`, and restarts it with exponential backoff (100 ms to 5 s)
      when it dies;
    * **external**: only connects to the named node and monitors it,
      reconnecting with backoff.

  It tells its owner (`CouncilEx.Node`) each change, as
  `{:member, pid, info}` (`info`: mode, status (`:starting`, `:up`,
  `:down`, `:unavailable`), node, os_pid, restarts): the owner's copy is
  what `CouncilEx.Node.info/0` and `status/0` show, so that they agree
  with where runs go.
  """
  use GenServer
  require Logger

  @ready_timeout 15_000
  @backoff_min 100
  @backoff_max 5_000

  @doc """
  Starts a member linked to the caller, its owner. `spec`: `{:managed,
  sname}` or `{:external, node}`.
  """
  @spec start_link({:managed, binary} | {:external, node}) :: GenServer.on_start()
  def start_link(spec), do: GenServer.start_link(__MODULE__, {spec, self()})

  @doc "Stops the member and, when managed, its node (SIGTERM: its runs are cancelled)."
  @spec stop(pid) :: :ok
  def stop(member) do
    GenServer.stop(member, :shutdown, 10_000)
  catch
    :exit, _ -> :ok
  end

  # ------------------------------------------------------------- callbacks

  @impl true
  def init({spec, owner}) do
    Process.flag(:trap_exit, true)

    {mode, node, sname} =
      case spec do
        {:managed, sname} -> {:managed, nil, sname}
        {:external, node} -> {:external, node, nil}
      end

    state = %{
      owner: owner,
      mode: mode,
      sname: sname,
      node: node,
      status: :starting,
      port: nil,
      os_pid: nil,
      cookie_file: nil,
      line: "",
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

  def handle_info({:EXIT, owner, reason}, %{owner: owner} = state), do: {:stop, reason, state}
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
    stop_process(state)
    remove_cookie(state)
    :ok
  end

  # ------------------------------------------------------------- start/stop

  defp start_node(state) do
    state = %{state | gen: state.gen + 1, line: ""}

    case CouncilEx.Node.ensure_distributed() do
      :ok ->
        if state.mode == :external, do: connect_external(state), else: spawn_node(state)

      {:error, reason} ->
        problem(state, "cannot start distribution: #{inspect(reason)}")
        |> Map.put(:status, :down)
        |> report()
        |> schedule_restart()
    end
  end

  defp connect_external(state) do
    if Node.connect(state.node) == true do
      up(state)
    else
      state
      |> problem("cannot connect to C node #{state.node}")
      |> Map.put(:status, :down)
      |> report()
      |> schedule_restart()
    end
  end

  defp spawn_node(state) do
    exe = CouncilEx.Node.executable()

    cond do
      not File.regular?(exe) ->
        state
        |> problem("C node binary #{exe} not found (`mix compile` builds it; see the README)")
        |> Map.put(:status, :unavailable)
        |> report()
        |> schedule_restart()

      true ->
        # The node comes back under the same name: a connection to the
        # old one that is still open (its nodedown not seen yet) would be
        # taken for the new node.
        if state.node, do: Node.disconnect(state.node)
        extra = CouncilEx.Node.node_args()
        cookie_file = write_cookie_file()

        port =
          open_port([
            :binary,
            :exit_status,
            :stderr_to_stdout,
            {:line, 65_536},
            args: [
              "-c",
              CouncilEx.Node.wrapper_script(),
              "council_node",
              exe,
              "--sname",
              state.sname,
              "--cookie-file",
              cookie_file | extra
            ]
          ])

        timer = Process.send_after(self(), {:ready_timeout, state.gen}, @ready_timeout)
        %{state | port: port, status: :starting, cookie_file: cookie_file, ready_timer: timer}
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
      {n, _} -> report(%{state | os_pid: n})
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
    {level, message} = CouncilEx.Node.parse_log_line(line)
    Logger.log(level, "council_node: " <> message)
    state
  end

  defp connect(node, tries) do
    cond do
      Node.connect(node) == true -> true
      tries <= 1 -> false
      true -> Process.sleep(50) && connect(node, tries - 1)
    end
  end

  defp up(state) do
    Node.monitor(state.node, true)
    # The first start is routine (debug, so that `mix run` prints nothing);
    # a node that comes back after a failure is worth an info line.
    level = if state.restarts == 0, do: :debug, else: :info
    Logger.log(level, "council_ex: C node #{state.node} is up")
    report(%{state | status: :up, backoff: @backoff_min, last_problem: nil})
  end

  defp node_down(%{status: status} = state, _why) when status in [:down, :unavailable], do: state

  defp node_down(state, _why) do
    if state.node, do: Node.monitor(state.node, false)
    cancel_timer(state.ready_timer)
    stop_process(state)
    state = remove_cookie(state)

    %{state | status: :down, port: nil, os_pid: nil, ready_timer: nil, restarts: state.restarts + 1}
    |> report()
    |> schedule_restart()
  end

  defp report(state) do
    send(
      state.owner,
      {:member, self(), Map.take(state, [:mode, :status, :node, :os_pid, :restarts])}
    )

    state
  end

  defp schedule_restart(state) do
    Process.send_after(self(), {:restart, state.gen}, state.backoff)
    %{state | backoff: min(state.backoff * 2, @backoff_max)}
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

  defp cancel_timer(nil), do: :ok
  defp cancel_timer(ref), do: Process.cancel_timer(ref)
end
