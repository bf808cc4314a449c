# Shared helpers for the C node's real-BEAM tests (loaded by every
# test/cnode/*_test.exs; run through scripts/run-cnode-tests).
#
# Environment (set by the runner): COUNCIL_NODE (binary under test),
# CNODE_COOKIE_FILE (0600 cookie file), CNODE_TMP (scratch dir; pids of the
# C nodes we start are written to $CNODE_TMP/pids so the runner can always
# kill them), ERL_EPMD_PORT (private epmd).
# The node under test is the ASan+UBSan build, 2-5x slower than the plain
# one, and CI machines may be loaded: every wait below is a deadline that a
# passing test never reaches, not a delay, so they are generous. A bare
# assert_receive waits 10 s (ExUnit's default is 100 ms).
ExUnit.start(timeout: 120_000, slowest: 3, assert_receive_timeout: 10_000)

defmodule CNodeTest do
  @moduledoc false
  import Bitwise

  def binary, do: System.get_env("COUNCIL_NODE") || "priv/council_node"
  def cookie_file, do: System.fetch_env!("CNODE_COOKIE_FILE")
  def cookie, do: cookie_file() |> File.read!() |> String.trim()
  def host, do: node() |> Atom.to_string() |> String.split("@") |> List.last()

  @doc """
  A node name no other script run by the same runner can have: unique
  integers restart at every VM, so the OS pid of this VM is part of it (a
  node of the previous script still leaving epmd cannot clash).
  """
  def unique_name(prefix), do: "#{prefix}_#{System.pid()}_#{System.unique_integer([:positive])}"

  @doc """
  Starts a C node; returns a map with :node, :port, :creation, :os_pid,
  :port_ref. Options: :sname, :args (extra options), :log_level,
  :cookie_args (default: --cookie-file with the runner's cookie; [] for
  none) and :env (variables added to the node's environment, as strings).
  """
  def start_node(opts \\ []) do
    port = open_node(opts)
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    receive do
      {^port, {:data, {:eol, "council_node ready " <> rest}}} ->
        [name, "port=" <> p, "creation=" <> c] = String.split(rest, " ")
        info = %{node: String.to_atom(name), port: String.to_integer(p),
                 creation: String.to_integer(c), os_pid: os_pid, port_ref: port}
        System.at_exit(fn _ -> System.cmd("kill", ["-KILL", "#{os_pid}"], stderr_to_stdout: true) end)
        info
      {^port, {:exit_status, st}} ->
        raise "council_node exited with status #{st} before it was ready"
    after
      30_000 -> raise "council_node not ready after 30 s"
    end
  end

  @doc """
  For a module's `setup_all`: one C node (start_node/1's options) for all
  of its tests, stopped after them; the context gets it as `info`.
  """
  def module_node(opts \\ []) do
    info = start_node(opts)
    ExUnit.Callbacks.on_exit(fn -> stop_node(info) end)
    {:ok, info: info}
  end

  @doc """
  The C node's program started as start_node/1 would (same options), as a
  port that delivers its stdout lines and exit status; its pid is written
  for the runner to kill.
  """
  def open_node(opts) do
    sname = Keyword.get(opts, :sname, unique_name("cn"))
    extra = Keyword.get(opts, :args, [])
    cookie_args = Keyword.get(opts, :cookie_args, ["--cookie-file", cookie_file()])
    args = ["--sname", sname | cookie_args] ++
             ["--log-level", Keyword.get(opts, :log_level, System.get_env("CNODE_LOG_LEVEL", "warn"))] ++ extra
    env = for {k, v} <- Keyword.get(opts, :env, []), do: {String.to_charlist(k), String.to_charlist(v)}
    port = Port.open({:spawn_executable, String.to_charlist(Path.expand(binary()))},
                     [:binary, :exit_status, {:line, 4096}, args: args, env: env] ++
                       Keyword.get(opts, :port_opts, []))
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    if tmp = System.get_env("CNODE_TMP") do
      File.write!(Path.join(tmp, "pids"), "#{os_pid}\n", [:append])
    end
    port
  end

  @doc """
  Sends SIGTERM and waits for the exit status (only the port's owner gets
  it; other processes, e.g. on_exit callbacks, wait for the OS pid to go).
  """
  def stop_node(%{os_pid: os_pid, port_ref: port}, timeout \\ 30_000) do
    owner? = Port.info(port, :connected) == {:connected, self()}
    System.cmd("kill", ["-TERM", "#{os_pid}"], stderr_to_stdout: true)
    if owner? do
      receive do
        {^port, {:exit_status, st}} -> st
      after
        timeout -> :timeout
      end
    else
      if wait_until(fn -> match?({_, 1}, System.cmd("kill", ["-0", "#{os_pid}"], stderr_to_stdout: true)) end,
           timeout), do: :stopped, else: :timeout
    end
  end

  @doc "A pid of the C node with the given num/serial/creation (NEW_PID_EXT)."
  def make_pid(node, num, serial \\ 0, creation) do
    name = Atom.to_string(node)
    :erlang.binary_to_term(<<131, 88, 119, byte_size(name), name::binary,
                             num::32, serial::32, creation::32>>)
  end

  @run_events [:run_started, :round_started, :member_started, :member_token,
                :member_completed, :round_completed, :run_completed, :run_failed,
                :run_cancelled]
  @terminal [:run_completed, :run_failed, :run_cancelled]

  @doc "Collects run events up to the terminal one; {:timeout, so_far} if it does not come."
  def events(timeout \\ 15_000, acc \\ []) do
    receive do
      e when is_tuple(e) and elem(e, 0) in @run_events ->
        if elem(e, 0) in @terminal,
          do: Enum.reverse([e | acc]),
          else: events(timeout, [e | acc])
    after
      timeout -> {:timeout, Enum.reverse(acc)}
    end
  end

  def stats(node) do
    {:ok, s} = GenServer.call({:council_ex, node}, :stats)
    s
  end

  def wait_until(fun, timeout \\ 20_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait(fun, deadline)
  end

  defp do_wait(fun, deadline) do
    cond do
      fun.() -> true
      System.monotonic_time(:millisecond) > deadline -> false
      true -> Process.sleep(20); do_wait(fun, deadline)
    end
  end

  @doc """
  Waits until `pid` is blocked in a GenServer.call (waiting for the reply
  in gen:do_call): its request has been sent by then, so a signal this
  process sends to the same node afterwards arrives after it. This is how
  a test orders "another process calls X" before "this process does Y",
  instead of a sleep.
  """
  def wait_calling(pid) do
    wait_until(fn ->
      Process.info(pid, [:status, :current_function]) ==
        [status: :waiting, current_function: {:gen, :do_call, 4}]
    end)
  end

  @doc """
  Starts a peer BEAM node (a unique name, our cookie, Elixir's code path).
  Booting a VM on a loaded machine can take a while: 60 s instead of
  :peer's default 15 s.
  """
  def start_peer(prefix, cookie) do
    {:ok, peer, peer_node} =
      :peer.start_link(%{name: String.to_atom(unique_name(prefix)),
                         wait_boot: 60_000,
                         args: [~c"-setcookie", String.to_charlist(cookie),
                                ~c"-pa", :code.lib_dir(:elixir, :ebin)]})
    {peer, peer_node}
  end

  # ------------------------------------------------ raw distribution client

  @flags 0x4 ||| 0x8 ||| 0x10 ||| 0x20 ||| 0x80 ||| 0x100 ||| 0x200 ||| 0x400 |||
         0x800 ||| 0x4000 ||| 0x10000 ||| 0x20000 ||| 0x40000 ||| 0x1000000 |||
         0x2000000 ||| 0x4000000 ||| (0x4 <<< 32)

  @doc "The handshake's name packet (version 6, 'N') of node `name`, without its length."
  def name_packet(name), do: <<?N, @flags::64, 1234::32, byte_size(name)::16, name::binary>>

  @doc """
  Connects to the node's dist port and does a real handshake (version 6,
  'N' name message) with `cookie`. Returns {:ok, socket} (packet 4, passive)
  or {:error, reason}.
  Returns {:ok, socket, our_node_name} on success.
  """
  def raw_connect(port, cookie, name \\ nil) do
    name = name || "raw#{System.unique_integer([:positive])}@#{host()}"
    {:ok, s} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false, packet: 2])
    :ok = :gen_tcp.send(s, name_packet(name))
    with {:ok, "sok"} <- :gen_tcp.recv(s, 0, 15_000),
         {:ok, <<?N, _flags::64, challenge::32, _creation::32, nl::16, _their::binary-size(nl)>>} <-
           :gen_tcp.recv(s, 0, 15_000) do
      mine = :rand.uniform(0xFFFFFFFF)
      digest = :crypto.hash(:md5, [cookie, Integer.to_string(challenge)])
      :ok = :gen_tcp.send(s, <<?r, mine::32, digest::binary>>)
      case :gen_tcp.recv(s, 0, 15_000) do
        {:ok, <<?a, ack::binary-size(16)>>} ->
          if ack == :crypto.hash(:md5, [cookie, Integer.to_string(mine)]) do
            :ok = :inet.setopts(s, packet: 4)
            {:ok, s, name}
          else
            {:error, :bad_ack}
          end
        other -> {:error, other}
      end
    else
      other -> {:error, other}
    end
  end

  @doc "Sends a pass-through frame: 'p' ++ 131 control ++ [131 payload]."
  def raw_send(s, ctl, payload \\ nil) do
    body = [?p, :erlang.term_to_binary(ctl) | if(payload, do: [:erlang.term_to_binary(payload)], else: [])]
    :gen_tcp.send(s, body)
  end

  @doc "Receives the next non-tick frame as {ctl, payload | nil}."
  def raw_recv(s, timeout \\ 15_000) do
    case :gen_tcp.recv(s, 0, timeout) do
      {:ok, ""} -> raw_recv(s, timeout)
      {:ok, <<?p, rest::binary>>} ->
        {ctl, used} = :erlang.binary_to_term(rest, [:used])
        payload = if used < byte_size(rest), do: :erlang.binary_to_term(binary_part(rest, used, byte_size(rest) - used))
        {ctl, payload}
      other -> other
    end
  end

  @doc "A pid of this raw client's fake node."
  def raw_pid(name, num), do: :erlang.binary_to_term(<<131, 88, 119, byte_size(name), name::binary, num::32, 0::32, 1234::32>>)
end
