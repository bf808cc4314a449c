# The C node as an attacker or an unlucky operator would try it (issue 10):
# junk sockets that reconnect whenever closed must not keep a real node
# out, and what they provoke is logged a bounded number of lines; epmd
# restarts are survived; exec runs only the programs the operator allows.
Code.require_file("support.exs", __DIR__)

defmodule CNode.HardeningTest do
  use ExUnit.Case, async: false
  import CNodeTest

  # n sockets that reconnect as soon as the node closes them, of the given
  # kinds in turn: :silent send nothing (closed when evicted or at the
  # first-packet deadline), :garbage (closed at once: a bad handshake
  # packet), :name a valid name packet and then nothing (closed when
  # evicted or at the handshake deadline).
  defp junk_flood(port, n, kinds \\ [:silent, :garbage]) do
    parent = self()
    for k <- 1..n do
      spawn_link(fn -> junk_loop(port, kinds |> Enum.at(rem(k, length(kinds))), parent) end)
    end
  end

  defp junk_loop(port, kind, parent) do
    case :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 5_000) do
      {:ok, s} ->
        case kind do
          :garbage -> :gen_tcp.send(s, "GET / HTTP/1.0\r\n\r\n")
          # a valid name packet (no cookie needed), then nothing: as far
          # into the handshake as a stranger gets
          :name -> :gen_tcp.send(s, name_packet())
          :silent -> :ok
        end
        until_closed(s)
        :gen_tcp.close(s)
        send(parent, :junk_cycle)
      _ -> Process.sleep(1)
    end
    junk_loop(port, kind, parent)
  end

  # what the node sends (a :name socket gets the status and the challenge)
  # is read until it closes the socket
  defp until_closed(s) do
    case :gen_tcp.recv(s, 0, 30_000) do
      {:ok, _} -> until_closed(s)
      _ -> :ok
    end
  end

  # a name packet with its 2-byte length
  defp name_packet do
    body = name_packet("junk_#{System.unique_integer([:positive])}@#{host()}")
    <<byte_size(body)::16, body::binary>>
  end

  defp drain_lines(port, acc) do
    receive do
      {^port, {:data, {:eol, line}}} -> drain_lines(port, [line | acc])
      {^port, {:data, {:noeol, line}}} -> drain_lines(port, [line | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  defp drain_cycles(n) do
    receive do
      :junk_cycle -> drain_cycles(n + 1)
    after
      0 -> n
    end
  end

  test "200 junk sockets from one address (over its budget of 128) keep no node of that address out" do
    i = start_node()
    on_exit(fn -> stop_node(i) end)
    flooders = junk_flood(i.port, 200, [:silent, :garbage, :name])
    # the flood is over the address's budget once junk has been evicted
    assert wait_until(fn -> stats(i.node).handshakes_evicted > 200 end)
    _ = drain_cycles(0)
    results =
      for _ <- 1..10 do
        Node.disconnect(i.node)
        t = System.monotonic_time(:millisecond)
        r = Node.ping(i.node)
        r2 = if r == :pong, do: GenServer.call({:council_ex, i.node}, :ping, 10_000)
        ms = System.monotonic_time(:millisecond) - t
        {r, r2, ms}
      end
    s = stats(i.node)
    cycles = drain_cycles(0)
    for p <- flooders, do: (Process.unlink(p); Process.exit(p, :kill))
    IO.puts("200 junk sockets: #{cycles} closed, #{s.handshakes_evicted} evicted, " <>
              "#{s.handshakes} pending; ping + call: #{inspect(Enum.map(results, &elem(&1, 2)), charlists: :as_lists)} ms")
    assert Enum.all?(results, fn {r, r2, _} -> r == :pong and r2 == :pong end), inspect(results)
    # the per-address budget held
    assert s.handshakes <= 128
  end

  test "100 reconnecting junk sockets keep no node out, and their log is bounded" do
    i = start_node(log_level: "warn", port_opts: [:stderr_to_stdout])
    on_exit(fn -> stop_node(i) end)
    _ = drain_lines(i.port_ref, [])
    flooders = junk_flood(i.port, 100)
    # let the flood reach its steady state
    Process.sleep(1_000)
    _ = drain_lines(i.port_ref, [])
    _ = drain_cycles(0)
    t0 = System.monotonic_time(:millisecond)
    results =
      for _ <- 1..10 do
        Node.disconnect(i.node)
        t = System.monotonic_time(:millisecond)
        r = Node.ping(i.node)
        ms = System.monotonic_time(:millisecond) - t
        r2 = if r == :pong, do: GenServer.call({:council_ex, i.node}, :ping, 10_000)
        Process.sleep(500)
        {r, r2, ms}
      end
    secs = (System.monotonic_time(:millisecond) - t0) / 1000
    lines = drain_lines(i.port_ref, [])
    cycles = drain_cycles(0)
    for p <- flooders, do: (Process.unlink(p); Process.exit(p, :kill))
    IO.puts("flood: #{cycles} junk connections closed in #{Float.round(secs, 1)} s, " <>
              "#{length(lines)} log lines; pings: #{inspect(Enum.map(results, &elem(&1, 2)), charlists: :as_lists)} ms")
    assert Enum.all?(results, fn {r, r2, _} -> r == :pong and r2 == :pong end), inspect(results)
    assert cycles > 1000, "the flood did not flood (#{cycles} cycles)"
    # at most CN_LOG_BURST (5) lines a second per kind, plus one summary
    # each: two kinds here
    assert length(lines) <= 14 * (secs + 2), Enum.join(Enum.take(lines, 40), "\n")
    assert Enum.any?(lines, &(&1 =~ "suppressed")), Enum.join(Enum.take(lines, 40), "\n")
    assert serving?(i.node)
  end

  defp epmd(args) do
    System.cmd(System.find_executable("epmd"), ["-port", System.fetch_env!("ERL_EPMD_PORT") | args],
               stderr_to_stdout: true)
  end

  defp epmd_names do
    case epmd(["-names"]) do
      {out, 0} -> out
      _ -> :down
    end
  end

  @quick %{id: "q", members: [%{id: "a", provider: "mock", options: %{latency_ms: 600_000}}],
           rounds: [%{type: "independent_analysis"}]}

  test "epmd killed and started again: the node registers again, same creation, pids valid" do
    sname = unique_name("epmd")
    i = start_node(sname: sname)
    on_exit(fn -> stop_node(i) end)
    {:ok, run} = GenServer.call({:council_ex, i.node}, {:start, %{spec: @quick, input: "q"}})
    assert epmd_names() =~ "name #{sname} at port #{i.port}"
    assert {_, 0} = epmd(["-kill"])
    assert wait_until(fn -> epmd_names() == :down end)
    # the connection to the node is still up: the node says it lost epmd
    assert wait_until(fn -> stats(i.node).epmd_registered == 0 end)
    Process.sleep(500)
    assert {_, 0} = System.cmd(System.find_executable("epmd"),
                               ["-daemon", "-address", "127.0.0.1", "-port",
                                System.fetch_env!("ERL_EPMD_PORT"), "-relaxed_command_check"])
    t0 = System.monotonic_time(:millisecond)
    assert wait_until(fn -> (n = epmd_names()) != :down and n =~ "name #{sname} at port #{i.port}" end,
                      10_000)
    IO.puts("re-registered #{System.monotonic_time(:millisecond) - t0} ms after epmd came back")
    Node.disconnect(i.node)
    assert wait_until(fn -> Node.ping(i.node) == :pong end, 5_000)
    s = stats(i.node)
    assert s.epmd_registered == 1 and s.epmd_losses == 1
    # the same incarnation: pids handed out before still work
    assert :erlang.term_to_binary(run) =~ <<i.creation::32>>
    assert is_binary(GenServer.call(run, :run_id))
    assert GenServer.call(run, :cancel) == :ok
  end

  defp exec_spec(argv, opts \\ %{}) do
    %{id: "x", members: [%{id: "e", provider: "exec", options: Map.put(opts, :argv, argv)}],
      rounds: [%{type: "independent_analysis"}]}
  end

  defp exec_run(node, spec) do
    case GenServer.call({:council_ex, node}, {:start, %{spec: spec, input: "hi", subscribe: [self()]}}) do
      {:ok, _pid} ->
        {:run_completed, _, %{rounds: [%{members: [m]}]}} = List.last(events())
        {:ok, m}
      error -> error
    end
  end

  @not_allowed "program not allowed"

  test "exec is refused without --exec-allow, and runs only what it allows" do
    i = start_node()
    on_exit(fn -> stop_node(i) end)
    for argv <- [["/bin/sh", "-c", "id"], ["cat"], ["./cat"]] do
      assert exec_run(i.node, exec_spec(argv)) ==
               {:error, {:invalid_spec, "members[0].options.argv", @not_allowed}}
    end
    # an exec tool of a model member and an exec member of a sub-council too
    tool = %{id: "m", provider: "openai", options: %{model: "x", tools: [%{name: "t", exec: ["cat"]}]}}
    assert exec_run(i.node, %{exec_spec(["cat"]) | members: [tool]}) ==
             {:error, {:invalid_spec, "members[0].options.tools[0].exec", @not_allowed}}
    sub = %{id: "c", provider: "council", options: %{spec: exec_spec(["cat"])}}
    assert exec_run(i.node, %{exec_spec(["cat"]) | members: [%{id: "m", provider: "mock"}, sub]}) ==
             {:error, {:invalid_spec, "members[1].options.spec.members[0].options.argv", @not_allowed}}
    assert stats(i.node).runs == 0

    # allowed: a program (given as a symlink, resolved), a directory
    dir = Path.join(System.get_env("CNODE_TMP") || System.tmp_dir!(), unique_name("bin"))
    File.mkdir_p!(dir)
    cat = System.find_executable("cat") |> Path.expand()
    File.ln_s!(cat, Path.join(dir, "kitty"))
    tools = Path.join(dir, "tools")
    File.mkdir_p!(tools)
    File.cp!(System.find_executable("echo"), Path.join(tools, "say"))
    File.chmod!(Path.join(tools, "say"), 0o755)
    j = start_node(args: ["--exec-allow", Path.join(dir, "kitty"), "--exec-allow", tools])
    on_exit(fn -> stop_node(j) end)
    # cat by name (PATH), by its real path, through the link, relative to cwd
    for {argv, opts} <- [{["cat"], %{}}, {[cat], %{}}, {[Path.join(dir, "kitty")], %{}},
                         {["./kitty"], %{cwd: dir}}] do
      assert {:ok, %{status: :ok, text: text}} = exec_run(j.node, exec_spec(argv, opts)), inspect(argv)
      assert text =~ "hi"
    end
    assert {:ok, %{status: :ok, text: "hello" <> _}} =
             exec_run(j.node, exec_spec([Path.join(tools, "say"), "hello"]))
    # not another program, nor one named through a path that leaves the directory
    escape = tools <> String.duplicate("/..", 30) <> "/bin/sh"
    for argv <- [["/bin/sh", "-c", "id"], ["echo", "x"], [escape], ["./say"]] do
      assert exec_run(j.node, exec_spec(argv)) ==
               {:error, {:invalid_spec, "members[0].options.argv", @not_allowed}}, inspect(argv)
    end
    # a path that does not exist stops the node at start, with a message
    {out, st} = System.cmd(Path.expand(binary()), ["--sname", unique_name("nx"), "--exec-allow",
                                                   Path.join(dir, "nothing")], stderr_to_stdout: true)
    assert st == 2 and out =~ "--exec-allow"
  end

  defp serving?(node), do: GenServer.call({:council_ex, node}, :ping, 15_000) == :pong
end
