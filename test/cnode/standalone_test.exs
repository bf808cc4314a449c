# The standalone program's environment, prepared as `erl -sname` does: an
# epmd started when none answers on $ERL_EPMD_PORT, and without a cookie
# option ~/.erlang.cookie, created (mode 0400, a random cookie) when absent.
Code.require_file("support.exs", __DIR__)

defmodule CNode.StandaloneTest do
  use ExUnit.Case, async: false
  import CNodeTest

  # a port nothing listens on (the kernel's pick, released)
  defp free_port do
    {:ok, l} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(l)
    :gen_tcp.close(l)
    Integer.to_string(port)
  end

  defp epmd_names(port) do
    case System.cmd("epmd", ["-port", port, "-names"], stderr_to_stdout: true) do
      {out, 0} -> {:ok, out}
      _ -> :none
    end
  end

  # Everything a node started with `opts` prints until it exits.
  defp run_until_exit(opts) do
    port = open_node(Keyword.put(opts, :port_opts, [:stderr_to_stdout]))
    collect(port, [])
  end

  defp collect(port, lines) do
    receive do
      {^port, {:data, {_, line}}} -> collect(port, [line | lines])
      {^port, {:exit_status, st}} -> {st, lines |> Enum.reverse() |> Enum.join("\n")}
    after
      30_000 -> flunk("the node did not exit: #{inspect(Enum.reverse(lines))}")
    end
  end

  test "with no epmd on its port, the node starts one, registers with it, and leaves it running" do
    port = free_port()
    assert epmd_names(port) == :none
    sname = unique_name("alone")
    info = start_node(sname: sname, env: [{"ERL_EPMD_PORT", port}])
    try do
      assert {:ok, names} = epmd_names(port)
      assert names =~ "name #{sname} at port #{info.port}"
      # a node that is reachable: the handshake of a peer works
      assert {:ok, s, _} = raw_connect(info.port, cookie())
      :gen_tcp.close(s)
      # a second node finds that epmd running and registers too
      other = start_node(env: [{"ERL_EPMD_PORT", port}])
      assert stop_node(other) == 0
      assert stop_node(info) == 0
      # the epmd outlives the node, as erl's does; the entry is gone
      assert {:ok, names} = epmd_names(port)
      refute names =~ sname
    after
      System.cmd("kill", ["-KILL", "#{info.os_pid}"], stderr_to_stdout: true)
      # the epmd this test caused: stopped by its port, once no node is in it
      assert wait_until(fn ->
               match?({_, 0}, System.cmd("epmd", ["-port", port, "-kill"], stderr_to_stdout: true)) or
                 epmd_names(port) == :none
             end)
    end
  end

  test "without a cookie option: ~/.erlang.cookie, created 0400 with a random cookie, then read" do
    home = Path.join(System.fetch_env!("CNODE_TMP"), "home_#{System.unique_integer([:positive])}")
    File.mkdir_p!(home)
    file = Path.join(home, ".erlang.cookie")
    opts = [cookie_args: [], env: [{"HOME", home}]]

    info = start_node(opts)
    assert {:ok, %File.Stat{mode: mode}} = File.stat(file)
    assert Bitwise.band(mode, 0o777) == 0o400
    cookie = File.read!(file)
    assert cookie =~ ~r/\A[A-Z]{20}\z/
    # the node uses it: a peer with that cookie gets in, another does not
    assert {:ok, s, _} = raw_connect(info.port, cookie)
    :gen_tcp.close(s)
    assert {:error, _} = raw_connect(info.port, "not-the-cookie")
    assert stop_node(info) == 0

    # started again: the same file, read as it is
    info = start_node(opts)
    assert File.read!(file) == cookie
    assert {:ok, s, _} = raw_connect(info.port, cookie)
    :gen_tcp.close(s)
    assert stop_node(info) == 0

    # a cookie file others may read is refused, as with --cookie-file
    File.chmod!(file, 0o644)
    assert {2, out} = run_until_exit(opts)
    assert out =~ "refusing cookie file #{file}"
    assert File.read!(file) == cookie

    # a HOME with no cookie that cannot be written: no cookie, a clear error
    File.chmod!(file, 0o600)
    File.rm!(file)
    File.chmod!(home, 0o500)
    try do
      if File.write(Path.join(home, "probe"), "x") == {:error, :eacces} do
        assert {2, out} = run_until_exit(opts)
        assert out =~ "cannot create the cookie file #{file}"
      end
    after
      File.chmod!(home, 0o700)
    end
  end
end
