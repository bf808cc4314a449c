defmodule CouncilEx.DSL do
  @moduledoc """
  The macros behind `use CouncilEx`: `member/2`, `round/2`, `chair/1`,
  `limits/1` and `router/1`. They collect the council at compile time and define
  `__council__/0`, which returns the validated `%CouncilEx.Spec{}`; an
  invalid council fails compilation with the spec's error message.

      defmodule MyApp.Triage do
        use CouncilEx

        member :fast, provider: :mock, latency_ms: 20, chunks: 2
        member :careful, provider: :mock, latency_ms: 80
        member :local, provider: MyApp.LocalModel   # a CouncilEx.Member module
        member :gpt, provider: :openai, model: "gpt-4o-mini",
          api_key: {:system, "OPENAI_API_KEY"},
          tools: [%{name: "lookup", description: "Looks a term up",
                    parameters: %{type: "object", properties: %{query: %{type: "string"}}},
                    handler: &MyApp.Tools.lookup/1}]

        round :independent_analysis
        round :iterate, max_iterations: 2, until: "consensus" do
          round :critique
          round :vote
        end
        chair :careful
        limits member_timeout_ms: 10_000, max_attempts: 2
        router fn input, _ctx -> if input =~ "code", do: [:gpt, :careful], else: [:fast, :local] end
      end

  `use CouncilEx` excludes `Kernel.round/1` from the module's imports
  (call it as `Kernel.round/1` there). Options: `id:` overrides the spec id
  (default: the module name, e.g. `"Elixir.MyApp.Triage"`).

  The spec is built at compile time, so a tool handler here must be a
  remote function capture (`&Mod.fun/1`): an anonymous function cannot be
  compiled into `__council__/0` (use `CouncilEx.DynamicCouncil` or
  `CouncilEx.Spec.new/1` for those). Configuration defaults of the model
  providers (`config :council_ex, :providers`, see `CouncilEx.Providers`)
  are merged when a run starts, not here.
  """

  alias CouncilEx.Spec

  @doc false
  defmacro __using__(opts) do
    quote do
      import Kernel, except: [round: 1]

      import CouncilEx.DSL,
        only: [
          member: 1,
          member: 2,
          round: 1,
          round: 2,
          round: 3,
          chair: 1,
          limits: 1,
          router: 1
        ]

      Module.register_attribute(__MODULE__, :council_members, accumulate: true)
      @council_round_stack [[]]
      @council_chair nil
      @council_limits nil
      @council_router nil
      @council_id unquote(opts)[:id]
      @before_compile CouncilEx.DSL
    end
  end

  @doc """
  Declares a member. `provider:` is `:mock`, `:exec`, `:council`, a model
  provider (`:openai`, `:openrouter`, `:ollama`, `:anthropic`, `:gemini`:
  option `model:` names the model), or an Elixir module implementing
  `CouncilEx.Member` (sent as provider `beam`); `:native` is refused (the C
  node has no native providers). `retry: {max_attempts, base_ms}` and
  `timeout_ms:` give this member its own retry policy and timeout (over
  the run's and the council's, see `CouncilEx.RunServer.start/1`). Every
  other option (or an explicit `options:` map) is passed to the provider
  as JSON, except for model
  providers `api_key: {:system, "VAR"}` (sent as `api_key_env`; a literal
  key is refused) and tools whose `handler:` is a function (see
  `CouncilEx.Spec`).
  """
  defmacro member(id, opts \\ []) do
    quote do
      CouncilEx.DSL.__member__(__MODULE__, unquote(id), unquote(opts))
    end
  end

  @doc """
  Declares the next round. `type` is a round type (see
  `CouncilEx.Spec.round_types/0`); `name:` renames it (names may repeat, as in the C node);
  `members:` limits who takes part (the others are `:skipped` in its
  result); `failure_mode: :continue` (the default: the round fails only
  when no member succeeds) or `:fail_fast` (the first member that fails
  for good, after its retries, fails the run); other options go to the
  round as JSON (docs/spec-format.md). An `:iterate` round takes its
  nested rounds in a `do` block.
  """
  defmacro round(type, opts \\ [])

  defmacro round(type, do: block), do: round_ast(type, [], block)

  defmacro round(type, opts) do
    {block, opts} = pop_do(opts)
    round_ast(type, opts, block)
  end

  @doc "`round/2` with options and a `do` block (for `:iterate`)."
  defmacro round(type, opts, do: block), do: round_ast(type, opts, block)

  defp round_ast(type, opts, block) do
    {defs, opts} = lift_router(opts)

    quote do
      unquote(defs)
      unquote(round_call_ast(type, opts, block))
    end
  end

  defp round_call_ast(type, opts, block) do
    if block do
      quote do
        CouncilEx.DSL.__push_frame__(__MODULE__)
        unquote(block)
        CouncilEx.DSL.__pop_frame__(__MODULE__, unquote(type), unquote(opts))
      end
    else
      quote do
        CouncilEx.DSL.__round__(__MODULE__, unquote(type), unquote(opts))
      end
    end
  end

  @doc """
  Names the council's router (`CouncilEx.Router`): it chooses who takes
  part in each round (a round's own `router:` option wins). A function of
  two arguments (an anonymous `fn` written here is compiled into the
  module as a function of its own), a module implementing
  `CouncilEx.Router`, a registered name, or the core's rules
  (`rules: [...], default: [...]`).
  """
  defmacro router(router) do
    {defs, [router: router]} = lift_router(router: router)

    quote do
      unquote(defs)
      @council_router unquote(router)
    end
  end

  # An inline `fn` router cannot be compiled into __council__/0: it
  # becomes a function of the module, named by a capture.
  defp lift_router(opts) when is_list(opts) do
    case Keyword.get(opts, :router) do
      {:fn, _, _} = fun ->
        name = :"__council_router_#{System.unique_integer([:positive])}__"

        defs =
          quote do
            @doc false
            def unquote(name)(input, ctx), do: unquote(fun).(input, ctx)
          end

        capture = quote do: &(__MODULE__.unquote(name) / 2)
        {defs, Keyword.put(opts, :router, capture)}

      _ ->
        {nil, opts}
    end
  end

  defp lift_router(opts), do: {nil, opts}

  @doc "Names the member that synthesises the final answer after the last round."
  defmacro chair(id) do
    quote do
      @council_chair unquote(id)
    end
  end

  @doc """
  Sets limits: `member_timeout_ms`, `max_attempts`, `backoff_ms`, `concurrency`.
  """
  defmacro limits(opts) do
    quote do
      @council_limits Keyword.merge(@council_limits || [], unquote(opts))
    end
  end

  @doc false
  defmacro __before_compile__(env) do
    mod = env.module
    spec = build!(mod, env)

    quote do
      @doc "The council spec defined with `use CouncilEx`."
      @spec __council__() :: CouncilEx.Spec.t()
      def __council__, do: unquote(Macro.escape(spec))
    end
  end

  # ------------------------------------------------- compile-time helpers

  @doc false
  @spec __member__(module, atom | binary, keyword) :: :ok
  def __member__(mod, id, opts) do
    unless Keyword.keyword?(opts),
      do: raise(ArgumentError, "member #{inspect(id)}: options must be a keyword list")

    Module.put_attribute(mod, :council_members, [{:id, id} | opts])
  end

  @doc false
  @spec __round__(module, atom | binary, keyword) :: :ok
  def __round__(mod, type, opts) do
    unless Keyword.keyword?(opts),
      do: raise(ArgumentError, "round #{inspect(type)}: options must be a keyword list")

    [frame | rest] = Module.get_attribute(mod, :council_round_stack)
    Module.put_attribute(mod, :council_round_stack, [[[{:type, type} | opts] | frame] | rest])
  end

  @doc false
  @spec __push_frame__(module) :: :ok
  def __push_frame__(mod) do
    Module.put_attribute(mod, :council_round_stack, [
      [] | Module.get_attribute(mod, :council_round_stack)
    ])
  end

  @doc false
  @spec __pop_frame__(module, atom | binary, keyword) :: :ok
  def __pop_frame__(mod, type, opts) do
    [nested | rest] = Module.get_attribute(mod, :council_round_stack)
    Module.put_attribute(mod, :council_round_stack, rest)
    __round__(mod, type, Keyword.put(opts, :rounds, Enum.reverse(nested)))
  end

  defp build!(mod, env) do
    [rounds] = Module.get_attribute(mod, :council_round_stack)

    attrs = %{
      id: Module.get_attribute(mod, :council_id) || Atom.to_string(mod),
      members: mod |> Module.get_attribute(:council_members) |> Enum.reverse(),
      rounds: Enum.reverse(rounds),
      chair: Module.get_attribute(mod, :council_chair),
      limits: Module.get_attribute(mod, :council_limits),
      router: Module.get_attribute(mod, :council_router)
    }

    case Spec.new(attrs) do
      {:ok, spec} ->
        check_tool_functions!(mod, env, spec)
        check_router_functions!(mod, env, spec)
        spec

      {:error, message} ->
        raise CompileError,
          file: env.file,
          line: env.line,
          description: "invalid council #{inspect(mod)}: #{message}"
    end
  end

  # Only remote captures (&Mod.fun/1) can be compiled into __council__/0.
  defp check_tool_functions!(mod, env, spec) do
    for {member_id, tools} <- Spec.beam_tools(spec),
        {name, fun} <- tools,
        Function.info(fun, :type) != {:type, :external} do
      raise CompileError,
        file: env.file,
        line: env.line,
        description:
          "invalid council #{inspect(mod)}: member #{inspect(member_id)}, tool #{inspect(name)}: " <>
            "the handler must be a remote function capture such as &MyTools.lookup/1 " <>
            "(an anonymous function cannot be compiled into the council)"
    end
  end

  defp check_router_functions!(mod, env, spec) do
    for {ref, fun} <- Spec.beam_routers(spec),
        is_function(fun),
        Function.info(fun, :type) != {:type, :external} do
      raise CompileError,
        file: env.file,
        line: env.line,
        description:
          "invalid council #{inspect(mod)}: router #{ref}: write the function in the " <>
            "router's place (fn ... end), or give a remote capture such as &MyRouter.pick/2"
    end
  end

  defp pop_do(opts) when is_list(opts) do
    case Keyword.pop(opts, :do) do
      {nil, opts} -> {nil, opts}
      {block, opts} -> {block, opts}
    end
  end

  defp pop_do(opts), do: {nil, opts}
end
