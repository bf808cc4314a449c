defmodule CouncilEx.Router do
  @moduledoc """
  Routers: who takes part in a round, decided when the round is about to
  start (SPEC section 5a).

  A council names a router for all its rounds, and a round may name its
  own (which wins):

      defmodule MyApp.Desk do
        use CouncilEx

        member :tax, provider: MyApp.TaxExpert
        member :law, provider: MyApp.Lawyer
        member :general, provider: :mock

        router fn input, _ctx ->
          if input =~ "tax", do: [:tax, :general], else: [:law, :general]
        end

        round :independent_analysis
        round :peer_review, router: MyApp.ReviewRouter
        chair :general
      end

  A router is one of:

    * a function of two arguments, `fn input, ctx -> [member_id] end`;
    * a module implementing this behaviour (`c:select/2`);
    * a name registered with `register/2` (looked up when a run starts);
    * rules the core evaluates itself, with no Elixir code at run time
      (so C hosts and bare C nodes can use them too):

          router rules: [[when: [input_contains: ["tax", "invoice"]], members: [:tax]],
                         [when: [previous_winner: :law], members: [:law]]],
                 default: [:general]

      The first rule whose conditions all hold gives the members;
      conditions are `input_contains` and `previous_text_contains` (a text
      or a list of texts, any of which, ASCII case ignored) and
      `previous_winner` (the winner of the latest vote, ranking or
      pairwise round). No rule: `default`, else every member.

  `input` is the run's input as the caller gave it; `ctx` is a map:
  `run_id`, `council`, `round` (`%{name, idx, type}`), `members` (the ids
  to choose among: the round's `members:` option, else the council's),
  `rounds` (the results of the rounds completed so far, as in
  `CouncilEx.await/2`'s result) and `user_opts`.

  The answer is a list of member ids (atoms or binaries), in any order.
  Members left out are in the round's result with status `:skipped` (after
  those who took part); an empty list skips the round (its
  `:round_started` and `:round_completed` are still published) and the run
  goes on. A router that raises, returns anything else, names a member
  that is not among the round's or takes longer than the member timeout
  fails the run with an error naming the round and the router, e.g.
  `"round peer_review: router beam failed: ..."`.

  Routers do not apply to `:synthesis` rounds, the chair's round or
  `:iterate` rounds themselves (the rounds inside an iterate are routed
  each time they run).

  Elixir routers run in the run's `CouncilEx.MemberServer` (the core asks
  through the C node's or the NIF's `beam` router, docs/protocol.md).
  """

  @typedoc "The context a router gets (see the moduledoc)."
  @type ctx :: %{
          run_id: binary,
          council: binary,
          round: %{name: binary, idx: non_neg_integer, type: binary},
          members: [binary],
          rounds: [map],
          user_opts: term
        }

  @typedoc "A router as a spec names it (see the moduledoc)."
  @type t :: (term, ctx -> [atom | binary]) | module | binary | map

  @doc "Chooses the members of the next round among `ctx.members`."
  @callback select(input :: term, ctx) :: [atom | binary]

  @doc """
  Registers a router (a function of two arguments or a module implementing
  this behaviour) under `name`, for specs that name it (`router: "name"`,
  `"router": "name"` in JSON). Replaces one registered under that name.
  Registration is cheap to read and costly to change (`:persistent_term`):
  register at start-up, not per run.

      iex> CouncilEx.Router.register("everyone", fn _input, ctx -> ctx.members end)
      :ok
      iex> CouncilEx.Router.lookup("everyone") |> is_function(2)
      true
  """
  @spec register(binary, (term, ctx -> [atom | binary]) | module) :: :ok
  def register(name, router) when is_binary(name) and name != "" do
    unless is_function(router, 2) or (is_atom(router) and router not in [nil, true, false]) do
      raise ArgumentError,
            "a router is a function of two arguments or a module, got: #{inspect(router)}"
    end

    :persistent_term.put({__MODULE__, name}, router)
  end

  @doc "Removes the router registered under `name` (if any)."
  @spec unregister(binary) :: :ok
  def unregister(name) when is_binary(name) do
    :persistent_term.erase({__MODULE__, name})
    :ok
  end

  @doc "The router registered under `name`, or nil."
  @spec lookup(binary) :: (term, ctx -> [atom | binary]) | module | nil
  def lookup(name) when is_binary(name), do: :persistent_term.get({__MODULE__, name}, nil)

  @doc false
  # Whether a spec's router value is served by Elixir code (not the core's
  # rules).
  @spec elixir?(term) :: boolean
  def elixir?(r), do: is_function(r, 2) or is_binary(r) or (is_atom(r) and r != nil)

  @doc false
  # The function or module a router stands for when a run starts:
  # {:ok, fun_or_module} or {:error, message}.
  @spec resolve(t) :: {:ok, (term, ctx -> term) | module} | {:error, binary}
  def resolve(fun) when is_function(fun, 2), do: {:ok, fun}

  def resolve(name) when is_binary(name) do
    case lookup(name) do
      nil -> {:error, "no router registered as #{inspect(name)} (CouncilEx.Router.register/2)"}
      router -> resolve(router)
    end
  end

  def resolve(mod) when is_atom(mod) do
    if Code.ensure_loaded?(mod) and function_exported?(mod, :select, 2),
      do: {:ok, mod},
      else: {:error, "#{inspect(mod)} does not implement CouncilEx.Router (select/2)"}
  end

  @doc """
  Calls a router (a function or a module, as `resolve/1` gives them) and
  checks its answer: `{:ok, [binary]}` or `{:error, message}` for a raise,
  a throw, an exit or an answer that is not a list of member ids. Used by
  the member server; handy in tests.

      iex> CouncilEx.Router.call(fn _in, _ctx -> [:a, "b"] end, "q", %{})
      {:ok, ["a", "b"]}
      iex> CouncilEx.Router.call(fn _in, _ctx -> :a end, "q", %{})
      {:error, "the router returned :a, expected a list of member ids"}
  """
  @spec call((term, ctx -> term) | module, term, map) :: {:ok, [binary]} | {:error, binary}
  def call(router, input, ctx) do
    answer = if is_function(router, 2), do: router.(input, ctx), else: router.select(input, ctx)

    ids(answer)
  rescue
    e -> {:error, "the router raised: " <> Exception.message(e)}
  catch
    kind, reason -> {:error, "the router failed: " <> Exception.format_banner(kind, reason)}
  end

  defp ids(list) when is_list(list) do
    if Enum.all?(list, &id?/1),
      do: {:ok, Enum.map(list, &to_id/1)},
      else: bad(list)
  end

  defp ids(other), do: bad(other)

  defp id?(id), do: (is_binary(id) and id != "") or (is_atom(id) and id not in [nil, true, false])

  defp to_id(id) when is_atom(id), do: Atom.to_string(id)
  defp to_id(id), do: id

  defp bad(answer) do
    text = inspect(answer, limit: 20, printable_limit: 200)
    {:error, "the router returned #{text}, expected a list of member ids"}
  end
end
