# The model providers over distribution: a BEAM node starts runs whose
# members are openai/anthropic/gemini models served by the fake model
# server (test/c/helpers/fake_llm.c) and sees tokens, usage, tool events,
# failure kinds and cancellation as terms; the key, which only the C node's
# environment holds, shows in no event, result, error or log line.
Code.require_file("support.exs", __DIR__)

defmodule CNode.LlmTest do
  use ExUnit.Case, async: false
  import CNodeTest

  @key "sk-cnode-test-4b1d9e7c2a-SECRET"
  @key_env "CNODE_TEST_LLM_KEY"

  defp helpers, do: System.get_env("COUNCIL_TEST_HELPERS") || "build/release/test/helpers"

  # The fake server; it exits when its stdin (this port) closes.
  defp start_fake do
    path = Path.expand(Path.join(helpers(), "fake_llm"))
    port = Port.open({:spawn_executable, String.to_charlist(path)},
                     [:binary, {:line, 1024}, args: ["--port", "0", "--require-key", @key]])
    receive do
      {^port, {:data, {:eol, "fake_llm ready port=" <> p}}} -> {port, String.to_integer(p)}
    after
      10_000 -> raise "fake_llm did not start (#{path})"
    end
  end

  # A C node whose stdout and stderr (its log, at debug level) come to this
  # process, with the key in its environment.
  defp start_logged_node do
    sname = unique_name("llm")
    args = ["--sname", sname, "--cookie-file", cookie_file(), "--log-level", "debug",
            "--exec-allow", "/bin/sh"]
    port = Port.open({:spawn_executable, String.to_charlist(Path.expand(binary()))},
                     [:binary, :exit_status, :stderr_to_stdout, {:line, 65_536}, args: args,
                      env: [{String.to_charlist(@key_env), String.to_charlist(@key)}]])
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    if tmp = System.get_env("CNODE_TMP"), do: File.write!(Path.join(tmp, "pids"), "#{os_pid}\n", [:append])
    node = wait_ready(port)
    %{node: node, os_pid: os_pid, port_ref: port}
  end

  defp wait_ready(port) do
    receive do
      {^port, {:data, {:eol, "council_node ready " <> rest}}} ->
        [name | _] = String.split(rest, " ")
        String.to_atom(name)
      {^port, {:data, _}} -> wait_ready(port)
      {^port, {:exit_status, st}} -> raise "council_node exited (#{st})"
    after
      30_000 -> raise "council_node not ready"
    end
  end

  # One process owns the fake server's and the node's ports for the whole
  # module (a port lives as long as its owner) and keeps the node's output.
  defp start_owner do
    parent = self()
    owner = spawn(fn ->
      {fake, fake_port} = start_fake()
      info = start_logged_node()
      send(parent, {:started, fake_port, info})
      owner_loop(fake, info, [])
    end)
    receive do
      {:started, fake_port, info} -> {owner, fake_port, info}
    after
      60_000 -> raise "the fake server or the node did not start"
    end
  end

  defp owner_loop(fake, info, lines) do
    port = info.port_ref
    receive do
      {^port, {:data, {_, line}}} -> owner_loop(fake, info, [line | lines])
      {^port, {:exit_status, _}} -> owner_loop(fake, info, lines)
      {:lines, from} -> send(from, {:lines, Enum.reverse(lines)}); owner_loop(fake, info, lines)
      {:stop, from} ->
        stop_node(info)
        Port.close(fake)
        send(from, :stopped)
      _ -> owner_loop(fake, info, lines)
    end
  end

  defp node_output(owner) do
    send(owner, {:lines, self()})
    receive do
      {:lines, l} -> l
    after
      10_000 -> flunk("no answer from the port owner")
    end
  end

  setup_all do
    {owner, fake_port, info} = start_owner()
    on_exit(fn ->
      send(owner, {:stop, self()})
      receive do
        :stopped -> :ok
      after
        30_000 -> :ok
      end
    end)
    {:ok, node: info.node, owner: owner, base: "http://127.0.0.1:#{fake_port}"}
  end

  defp model(scenario), do: "#{scenario}~#{System.unique_integer([:positive])}"

  defp member(id, provider, model, base, extra \\ %{}) do
    url = case provider do
      "anthropic" -> base
      "gemini" -> base <> "/v1beta"
      _ -> base <> "/v1"
    end
    %{id: id, provider: provider,
      options: Map.merge(%{model: model, base_url: url, api_key_env: @key_env}, extra)}
  end

  defp start(node, members, extra \\ %{}) do
    spec = Map.merge(%{id: "llm", members: members,
                       rounds: [%{type: "independent_analysis", name: "draft"}]}, extra)
    GenServer.call({:council_ex, node}, {:start, %{spec: spec, input: "What is 2+2?",
                                                   subscribe: [self()]}})
  end

  @terminal [:run_completed, :run_failed, :run_cancelled]

  # Every message of the run up to its terminal event.
  defp collect(acc \\ []) do
    receive do
      e when is_tuple(e) and elem(e, 0) in @terminal -> Enum.reverse([e | acc])
      e when is_tuple(e) -> collect([e | acc])
    after
      20_000 -> flunk("no terminal event; got #{inspect(Enum.reverse(acc), limit: 20)}")
    end
  end

  defp refute_key(term), do: refute(inspect(term, limit: :infinity, printable_limit: :infinity) =~ @key)

  test "three APIs stream tokens and report usage as terms", %{node: node, base: base} do
    {:ok, _pid} = start(node, [member("gpt", "openai", model("hello"), base),
                               member("claude", "anthropic", model("hello"), base),
                               member("gem", "gemini", model("hello"), base)])
    evs = collect()
    assert {:run_completed, _, %{final: final, usage: run_usage, rounds: [round]}} = List.last(evs)
    assert is_binary(final)
    for id <- ["gpt", "claude", "gem"] do
      toks = for {:member_token, _, "draft", ^id, chunk} <- evs, do: chunk
      assert length(toks) > 3
      assert [%{status: :ok, text: text, error_kind: nil,
                usage: %{input_tokens: i, output_tokens: o, cost: nil}}] =
               for({:member_completed, _, "draft", ^id, r} <- evs, do: r)
      assert IO.iodata_to_binary(toks) == text
      assert text =~ "Hello from hello."
      assert i > 0 and o > 0
    end
    assert %{usage: %{input_tokens: ri}} = round
    assert run_usage.input_tokens == ri and ri > 0
    refute_key(evs)
  end

  test "tools run and are seen as tool_call events", %{node: node, base: base} do
    tools = [%{name: "shout", exec: ["/bin/sh", "-c", "tr a-z A-Z"]},
             %{name: "unknown_handler", handler: "nobody_registered_this"}]
    {:ok, _} = start(node, [member("m", "openai", model("tools"), base, %{tools: tools})])
    evs = collect()
    assert {:run_completed, _, %{rounds: [%{members: [%{status: :ok, text: text}]}]}} = List.last(evs)
    reqs = for {:tool_call_request, _, "draft", "m", t} <- evs, do: t
    ress = for {:tool_call_result, _, "draft", "m", t} <- evs, do: t
    assert [%{name: "shout", arguments: ~s({"query":"q1"}), id: id1},
            %{name: "unknown_handler"}] = reqs
    assert %{id: ^id1, status: :ok, result: ~s({"QUERY":"Q1"})} =
             Enum.find(ress, &(&1.name == "shout"))
    assert %{status: :error, result: err} = Enum.find(ress, &(&1.name == "unknown_handler"))
    assert err =~ "no tool handler"
    assert text =~ "Tool results: "
  end

  test "a wrong key is a permanent error naming the variable", %{node: node, base: base} do
    m = member("m", "openai", model("status-401"), base)
    {:ok, _} = start(node, [m], %{limits: %{max_attempts: 3}})
    evs = collect()
    assert {:run_failed, _, _errors, %{rounds: [%{members: [r]}]}} = List.last(evs)
    assert %{status: :error, error_kind: :permanent, attempts: 1, error: msg} = r
    assert msg =~ @key_env
    refute_key(evs)
  end

  test "rate limits are retried after Retry-After", %{node: node, base: base} do
    {:ok, _} = start(node, [member("m", "anthropic", model("status-429"), base)],
                     %{limits: %{max_attempts: 2, backoff_ms: 1}})
    evs = collect()
    assert {:run_completed, _, %{rounds: [%{members: [%{status: :ok, attempts: 2}]}]}} = List.last(evs)
  end

  test "cancelling a run mid-stream closes the model's connection", %{node: node, base: base} do
    mdl = model("slow")
    {:ok, pid} = start(node, [member("m", "gemini", mdl, base)])
    assert_receive {:member_token, _, "draft", "m", _}, 10_000
    :ok = GenServer.call(pid, :cancel)
    assert [{:run_cancelled, _, _} | _] = Enum.reverse(collect())
    {:ok, _} = Application.ensure_all_started(:inets)
    # the server marks a request whose client went away before its end
    assert wait_until(fn ->
             {:ok, {{_, 200, _}, _, body}} =
               :httpc.request(String.to_charlist(base <> "/_requests"))
             body |> IO.iodata_to_binary() |> :jiffy.decode([:return_maps])
             |> Enum.any?(&(&1["model"] == mdl and &1["complete"] == false))
           end, 10_000)
  end

  test "the node's log holds no key", %{owner: owner, node: node, base: base} do
    # a run of its own, so that there is something logged whatever the order
    {:ok, _} = start(node, [member("m", "openai", model("status-401"), base)])
    collect()
    lines = node_output(owner)
    assert lines != []
    for l <- lines, do: refute(l =~ @key)
  end
end
