defmodule CouncilEx.Spec do
  @moduledoc """
  A council spec: members, rounds, an optional chair and limits.

  Specs come from the `use CouncilEx` DSL (`MyCouncil.__council__/0`) or from
  `CouncilEx.DynamicCouncil.to_spec/1`; both build them with `new/1`, which
  validates and normalises, so the same council written either way gives
  equal structs.

      iex> {:ok, spec} =
      ...>   CouncilEx.Spec.new(%{
      ...>     id: "dynamic:demo",
      ...>     members: [%{id: "a", provider: :mock}, %{id: "b", provider: :mock}],
      ...>     rounds: [%{type: :independent_analysis}, %{type: :vote}],
      ...>     chair: "a"
      ...>   })
      iex> spec.chair
      "a"
      iex> CouncilEx.Spec.to_map(spec)["rounds"]
      [%{"type" => "independent_analysis", "name" => "independent_analysis", "options" => %{}},
       %{"type" => "vote", "name" => "vote", "options" => %{}}]

  Normal form: ids, round names and option keys are binaries (they travel
  as JSON and never become atoms on the C node); round types, providers and
  limit keys are atoms from fixed sets. A member whose provider is an
  Elixir module implementing `CouncilEx.Member` has `provider: :beam` and
  `module: TheModule`; it is sent as provider `"beam"` with option
  `"module"`.

  Model providers (`model_providers/0`: `:openai`, `:openrouter`,
  `:ollama`, `:anthropic`, `:gemini`) call a model API from the C node;
  their options (`model`, `base_url`, `temperature`, `tools`, ...) are the
  C node's to check (docs/spec-format.md), with two rules applied here:

    * API keys never travel in a spec. `api_key: {:system, "VAR"}` becomes
      `"api_key_env" => "VAR"` (the C node reads that variable of its own
      environment); a literal key (`api_key: "sk-..."`) is refused, at
      `members[i].options.api_key`. Keys held in the application's
      configuration are `CouncilEx.Providers`' business: they are merged
      in when a run starts, never into the spec struct.
    * A tool whose `handler` is a function of one argument is an Elixir
      tool: it is sent as `"handler" => "beam"` and the function is kept
      in the member's `tools` (`beam_tools/1`), for the run's
      `CouncilEx.MemberServer` to call when the model asks for it. Tools
      with `exec: [argv]` or a handler name pass through unchanged.

      iex> {:ok, spec} =
      ...>   CouncilEx.Spec.new(
      ...>     id: "models",
      ...>     members: [[id: :gpt, provider: :openai, model: "gpt-4o-mini",
      ...>                api_key: {:system, "MY_OPENAI_KEY"}]],
      ...>     rounds: [[type: :independent_analysis]]
      ...>   )
      iex> hd(CouncilEx.Spec.to_map(spec)["members"])
      %{"id" => "gpt", "provider" => "openai",
        "options" => %{"model" => "gpt-4o-mini", "api_key_env" => "MY_OPENAI_KEY"}}

  The JSON sent to the C node (`to_json/1`):

      {"id": "...", "members": [{"id": "a", "provider": "mock", "options": {}}],
       "rounds": [{"type": "vote", "name": "vote", "options": {}}],
       "chair": "a",
       "limits": {"member_timeout_ms": 30000, "max_attempts": 2,
                  "backoff_ms": 100, "concurrency": 8}}

  An `iterate` round carries its nested rounds in `"rounds"` and its
  `"max_iterations"` / `"until"` in its options.
  """

  defmodule Member do
    @moduledoc "One member of a council spec (see `CouncilEx.Spec`)."
    @enforce_keys [:id, :provider]
    defstruct id: nil, provider: nil, module: nil, options: %{}, tools: %{}

    @typedoc """
    A member: binary id, provider kind, the BEAM module for `:beam`, JSON
    options, and the Elixir functions of its tools whose handler is a
    function (tool name => function; sent as handler `"beam"`).
    """
    @type t :: %__MODULE__{
            id: binary,
            provider: CouncilEx.Spec.provider(),
            module: module | nil,
            options: %{optional(binary) => term},
            tools: %{optional(binary) => (map -> term)}
          }
  end

  defmodule Round do
    @moduledoc "One round of a council spec (see `CouncilEx.Spec`)."
    @enforce_keys [:type, :name]
    defstruct type: nil, name: nil, options: %{}, rounds: [], router: nil

    @typedoc """
    A round: type, name (the type unless renamed), JSON options, nested
    rounds (iterate), and its router (`CouncilEx.Router`), if any.
    """
    @type t :: %__MODULE__{
            type: CouncilEx.Spec.round_type(),
            name: binary,
            options: %{optional(binary) => term},
            rounds: [t],
            router: CouncilEx.Router.t() | nil
          }
  end

  @enforce_keys [:id, :members, :rounds]
  defstruct id: nil, members: [], rounds: [], chair: nil, limits: %{}, router: nil

  @typedoc """
  Provider kinds a spec may name (SPEC section 4; `council` runs a
  sub-council; the model providers call a model API, see
  `model_providers/0`). The core's `native` kind (a C callback registered
  by a C host through the native C API) is refused: the C node that serves
  the library's runs registers none.
  """
  @type provider ::
          :mock | :exec | :beam | :council | :openai | :openrouter | :ollama | :anthropic | :gemini

  @typedoc "Built-in round types (SPEC section 5a)."
  @type round_type ::
          :independent_analysis
          | :peer_review
          | :anonymized_peer_review
          | :critique
          | :ranking
          | :vote
          | :iterate
          | :pairwise_elimination
          | :synthesis

  @typedoc "Limit keys and their non-negative integer values."
  @type limits :: %{
          optional(:member_timeout_ms) => non_neg_integer,
          optional(:max_attempts) => pos_integer,
          optional(:backoff_ms) => non_neg_integer,
          optional(:concurrency) => pos_integer
        }

  @typedoc "A validated council spec."
  @type t :: %__MODULE__{
          id: binary,
          members: [Member.t()],
          rounds: [Round.t()],
          chair: binary | nil,
          limits: limits,
          router: CouncilEx.Router.t() | nil
        }

  # From the core's schema (CouncilEx.Schema); `beam` is the C node's.
  @model_providers CouncilEx.Schema.model_providers()
  @providers CouncilEx.Schema.providers() ++ [:beam]
  @round_types CouncilEx.Schema.round_types()
  @limit_keys CouncilEx.Schema.limit_keys()
  @limit_max Map.new(@limit_keys, &{&1, CouncilEx.Schema.limit_max(&1)})

  # What a spec is made of, from the core's schema too: the keys it reads
  # (the struct's fields), the fewest members and rounds, the member key
  # that must be unique, the shortest name, and which round types have
  # nested rounds (an option of kind "rounds"; the struct keeps them in
  # `rounds`).
  @rules CouncilEx.Schema.spec_rules()
  @spec_keys @rules["keys"] |> Map.keys() |> Enum.sort() |> Enum.map(&String.to_atom/1)
  @min_members @rules["min_members"]
  @min_rounds @rules["min_rounds"]
  @unique_key @rules["unique_member_key"]
  @min_name_bytes @rules["min_name_bytes"]
  @nesting_types for t <- @round_types,
                     match?(
                       %{"rounds" => %{"kind" => "rounds"}},
                       CouncilEx.Schema.round_options(t)
                     ),
                     do: t

  # The struct holds what the core reads, and refers to members where the
  # core does: a spec's `chair`, a round's `members` (and options of kind
  # member_id) are checked against the member ids here.
  if Enum.sort(@spec_keys) !=
       Enum.sort(Map.keys(Map.delete(Module.get_attribute(__MODULE__, :__struct__), :__struct__))) or
       @rules["keys"]["chair"] != "member_id" or @unique_key != "id" do
    raise CompileError,
      description:
        "CouncilEx.Spec: the core's schema has other spec keys than this struct: " <>
          inspect(@rules["keys"])
  end

  @doc "The provider kinds accepted in a spec."
  @spec providers() :: [provider]
  def providers, do: @providers

  @doc "The model providers: members that call a model API from the C node."
  @spec model_providers() :: [provider]
  def model_providers, do: @model_providers

  @doc "The round types accepted in a spec."
  @spec round_types() :: [round_type]
  def round_types, do: @round_types

  @doc "The limit keys accepted in a spec."
  @spec limit_keys() :: [atom]
  def limit_keys, do: @limit_keys

  @doc """
  Builds and validates a spec from a map or keyword list with keys `:id`,
  `:members`, `:rounds`, `:chair` (optional) and `:limits` (optional).
  Keys may be atoms or binaries at every level.

  Members are maps or keyword lists `%{id: id, provider: p, options: map}`
  (other keys than `:id`, `:provider`, `:options`, `:module` are taken as
  options); `p` is one of `providers/0` (atom or binary) or an Elixir module
  implementing `CouncilEx.Member`. Rounds are `%{type: t, name: n, options:
  map, rounds: [round]}` (again, other keys are options; `rounds` only for
  `iterate`). Returns `{:ok, spec}` or `{:error, message}` naming the field.
  """
  @spec new(map | keyword) :: {:ok, t} | {:error, binary}
  def new(attrs) do
    case build(attrs) do
      {:ok, spec} -> {:ok, spec}
      {:error, message, _field} -> {:error, message}
    end
  end

  # new/1, and with an error the C node's path of the field it is about:
  # every check below knows the path of what it checks and says it.
  defp build(attrs) when is_list(attrs) or is_map(attrs) do
    attrs = to_map(attrs, "spec", "spec")

    with {:ok, id} <- fetch_id(attrs),
         {:ok, members} <- members(get(attrs, :members)),
         {:ok, rounds} <- rounds(get(attrs, :rounds), "rounds", "rounds"),
         {:ok, chair} <- chair(get(attrs, :chair), members),
         {:ok, limits} <- limits(get(attrs, :limits)),
         router = router!(get(attrs, :router), "router", "router"),
         :ok <- check_unknown(attrs, @spec_keys, "spec"),
         :ok <- check_round_members(rounds, members) do
      {:ok,
       %__MODULE__{
         id: id,
         members: members,
         rounds: rounds,
         chair: chair,
         limits: limits,
         router: router
       }}
    end
  catch
    {:spec_error, message, path} -> {:error, message, path}
  end

  defp build(other),
    do: {:error, "spec: expected a map or keyword list, got: #{inspect(other)}", "spec"}

  @doc "Like `new/1` but raises `ArgumentError` on an invalid spec."
  @spec new!(map | keyword) :: t
  def new!(attrs) do
    case new(attrs) do
      {:ok, spec} -> spec
      {:error, message} -> raise ArgumentError, "invalid council spec: " <> message
    end
  end

  @doc """
  Checks an existing struct (e.g. one built by hand) by rebuilding it with
  `new/1`: `{:ok, spec}` (normalised) or `{:error, message}` naming the
  field, as `new/1`.
  """
  @spec validate(t) :: {:ok, t} | {:error, binary}
  def validate(%__MODULE__{} = spec) do
    case validate_field(spec) do
      {:ok, spec} -> {:ok, spec}
      {:error, message, _field} -> {:error, message}
    end
  end

  defp validate_field(spec) do
    case check_struct(spec) do
      :ok -> spec |> to_map() |> put_beam_parts(spec) |> build()
      {:error, message, path} -> {:error, message, path}
    end
  end

  @doc """
  Checks a spec the way `CouncilEx.RunServer` does before anything is sent
  to the C node: `{:ok, spec}` (normalised, see `validate/1`) or
  `{:error, {:invalid_spec, field, message}}`, the shape of the C node's own
  refusal (docs/protocol.md). `field` is a path into the spec in the C
  node's style, and for the common errors the C node's own path
  (`"id"`, `"members"`, `"members[1]"`, `"members[0].id"` (also for a
  duplicate id: the second one), `"members[2].provider"`, `"rounds"`,
  `"rounds[2].type"`, `"rounds[1].options.rounds[0].type"`,
  `"rounds[0].options.members[1]"`, `"rounds[1].options.until"`,
  `"chair"`, `"limits"`, `"limits.max_attempts"`,
  `"members[0].options.api_key"`, `"members[0].options.tools[1].handler"`);
  `message` is this library's own (the text of `new/1`'s error) and says
  what is wrong. The options of model members are the C node's to check
  (a missing `model` is found when a run starts, see
  `CouncilEx.Providers.resolve/2`, as the configuration may give it).

  What it accepts is what the C node accepts for these: limits from 0
  (`max_attempts: 0` is one attempt, `concurrency: 0` unbounded) up to
  the node's maxima, round names that repeat, and a `council` member
  whose nested spec is invalid (the C node accepts the parent and fails
  each call of that member with the nested spec's error).

      iex> spec = CouncilEx.Spec.new!(id: "x", members: [[id: "a", provider: :mock]], rounds: [[type: :vote]])
      iex> CouncilEx.Spec.check(%{spec | rounds: []})
      {:error, {:invalid_spec, "rounds", "empty (a council needs at least one round)"}}
  """
  @spec check(t) :: {:ok, t} | {:error, {:invalid_spec, binary, binary}}
  def check(%__MODULE__{} = spec) do
    case validate_field(spec) do
      {:ok, spec} -> {:ok, spec}
      {:error, message, path} -> {:error, {:invalid_spec, path, what(message)}}
    end
  end

  # The message without the "where: " it starts with (the path says where).
  defp what(message) do
    case String.split(message, ": ", parts: 2) do
      [_where, what] -> what
      [what] -> what
    end
  end

  # A hand-built struct whose parts are not the structs to_map/1 reads.
  defp check_struct(%__MODULE__{members: members, rounds: rounds, limits: limits}) do
    cond do
      not (is_list(members) and Enum.all?(members, &member_struct?/1)) ->
        {:error,
         "members: expected a list of %CouncilEx.Spec.Member{} (provider an atom, options and tools maps), got: #{inspect(members)}",
         "members"}

      not (is_list(rounds) and Enum.all?(rounds, &round_struct?/1)) ->
        {:error,
         "rounds: expected a list of %CouncilEx.Spec.Round{} (type an atom, options a map, rounds a list of rounds), got: #{inspect(rounds)}",
         "rounds"}

      not (is_map(limits) and Enum.all?(Map.keys(limits), &is_atom/1)) ->
        {:error, "limits: expected a map with atom keys, got: #{inspect(limits)}", "limits"}

      true ->
        :ok
    end
  end

  defp member_struct?(%Member{provider: p, options: o, tools: t}),
    do: is_atom(p) and is_map(o) and is_map(t)

  defp member_struct?(_), do: false

  defp round_struct?(%Round{type: t, options: o, rounds: rs}) when is_list(rs),
    do: is_atom(t) and is_map(o) and Enum.all?(rs, &round_struct?/1)

  defp round_struct?(_), do: false

  @doc """
  The JSON-ready map (binary keys) that is sent to the C node as `:spec`.
  """
  @spec to_map(t) :: map
  def to_map(%__MODULE__{} = spec) do
    base = %{
      "id" => spec.id,
      "members" => Enum.map(spec.members, &member_map/1),
      "rounds" => rounds_map(spec.rounds, "rounds")
    }

    base
    |> put_if("chair", spec.chair)
    |> put_if("router", router_map(spec.router, "router"))
    |> put_if(
      "limits",
      if(spec.limits == %{},
        do: nil,
        else: Map.new(spec.limits, fn {k, v} -> {Atom.to_string(k), v} end)
      )
    )
  end

  @doc """
  The spec as a JSON binary (`CouncilEx.JSON`). Raises `ArgumentError` when an option
  value cannot be encoded as JSON.
  """
  @spec to_json(t) :: binary
  def to_json(%__MODULE__{} = spec) do
    spec |> to_map() |> CouncilEx.JSON.encode!()
  end

  # checked_json/1's table: up to @memo_cap specs and @memo_bytes bytes of
  # their JSON (counted under the key @memo_bytes_key; each spec's term
  # holds about as much again), emptied when either would be passed; a
  # spec whose JSON alone is over the budget is not kept (the count is
  # approximate while starts fill the table at once: a bound, not a tally)
  @memo CouncilEx.Spec.Memo
  @memo_cap 256
  @memo_bytes 8 * 1024 * 1024
  @memo_bytes_key :"$json_bytes"

  @doc false
  # Creates checked_json/1's table, when the application starts (its owner
  # is the application's own process, so it lives as long as the
  # application). Without it checked_json/1 remembers nothing.
  @spec memo_table() :: :ok
  def memo_table do
    if :ets.whereis(@memo) == :undefined do
      :ets.new(@memo, [:set, :public, :named_table, read_concurrency: true, write_concurrency: true])
    end

    :ok
  end

  @doc false
  # {:ok, to_json(spec)} when check/1 gives `spec` back as it is and it
  # encodes; {:checked, result} with check/1's result when that is anything
  # else (an invalid spec, one check/1 changes), so that the start does not
  # check it again; :error when the check raises or the spec has an option
  # with no JSON form (the start then meets the same). An {:ok, json} is
  # remembered, keyed by the whole spec (a spec that differs in anything is
  # another key): check/1 of a spec it leaves as it is reads nothing but
  # the spec (a sub-council given as a module, the one thing check/1 reads
  # from elsewhere, is turned into its map, so such a spec is not one of
  # these). CouncilEx.start/3 and the other starts ask it for every spec,
  # a council module's __council__/0 result as a struct given.
  @spec checked_json(t) :: {:ok, binary} | {:checked, term} | :error
  def checked_json(%__MODULE__{} = spec) do
    {:ok, :ets.lookup_element(@memo, spec, 2)}
  rescue
    # not known (or no table)
    ArgumentError -> remember(spec, check_json(spec))
  end

  defp check_json(spec) do
    case check(spec) do
      {:ok, ^spec} -> {:ok, to_json(spec)}
      other -> {:checked, other}
    end
  rescue
    _ -> :error
  end

  defp remember(spec, {:ok, json} = known) do
    size = byte_size(json)

    if size <= @memo_bytes do
      bytes = :ets.update_counter(@memo, @memo_bytes_key, size, {@memo_bytes_key, 0})

      # the size counts the counter's own entry
      if bytes > @memo_bytes or :ets.info(@memo, :size) > @memo_cap do
        :ets.delete_all_objects(@memo)
        :ets.insert(@memo, {@memo_bytes_key, size})
      end

      :ets.insert(@memo, {spec, json})
    end

    known
  rescue
    ArgumentError -> known
  end

  defp remember(_spec, other), do: other

  @doc "The member ids of the spec whose provider is a BEAM module, with the modules."
  @spec beam_members(t) :: %{binary => module}
  def beam_members(%__MODULE__{members: members}) do
    for %Member{provider: :beam, module: mod, id: id} <- members,
        mod != nil,
        into: %{},
        do: {id, mod}
  end

  @doc """
  The Elixir tools of the spec's members: member id => (tool name =>
  function), for the members that have any. These are the tools sent
  with handler `"beam"`, answered by the run's `CouncilEx.MemberServer`.
  """
  @spec beam_tools(t) :: %{binary => %{binary => (map -> term)}}
  def beam_tools(%__MODULE__{members: members}) do
    for %Member{id: id, tools: tools} <- members, tools != %{}, into: %{}, do: {id, tools}
  end

  # ------------------------------------------------------------------ members

  defp member_map(%Member{} = m) do
    options =
      case m.module do
        nil -> m.options
        mod -> Map.put(m.options, "module", Atom.to_string(mod))
      end

    %{"id" => m.id, "provider" => Atom.to_string(m.provider), "options" => options}
  end

  defp rounds_map(rounds, path) do
    rounds
    |> Enum.with_index()
    |> Enum.map(fn {r, i} -> round_map(r, "#{path}[#{i}]") end)
  end

  defp round_map(%Round{} = r, path) do
    options =
      case router_map(r.router, path) do
        nil -> r.options
        router -> Map.put(r.options, "router", router)
      end

    map = %{"type" => Atom.to_string(r.type), "name" => r.name, "options" => options}

    if r.type in @nesting_types,
      do: Map.put(map, "rounds", rounds_map(r.rounds, path <> ".rounds")),
      else: map
  end

  # An Elixir router goes out as the C node's "beam" router with a ref
  # saying which of the run's routers it is (beam_routers/1); rules go as
  # they are.
  defp router_map(nil, _ref), do: nil
  defp router_map(%{} = rules, _ref), do: rules
  defp router_map(_elixir, ref), do: %{"name" => "beam", "ref" => ref}

  @doc """
  The routers of the spec served by Elixir code (functions, modules,
  registered names; not the core's rules), by the ref they are sent with:
  `"router"` for the council's, the round's path (`"rounds[1]"`,
  `"rounds[2].rounds[0]"`) for a round's.
  """
  @spec beam_routers(t) :: %{binary => CouncilEx.Router.t()}
  def beam_routers(%__MODULE__{} = spec) do
    top = if CouncilEx.Router.elixir?(spec.router), do: [{"router", spec.router}], else: []
    Map.new(top ++ round_routers(spec.rounds, "rounds"))
  end

  defp round_routers(rounds, path) do
    rounds
    |> Enum.with_index()
    |> Enum.flat_map(fn {r, i} ->
      at = "#{path}[#{i}]"
      own = if CouncilEx.Router.elixir?(r.router), do: [{at, r.router}], else: []
      own ++ round_routers(r.rounds, at <> ".rounds")
    end)
  end

  defp put_beam_parts(map, %__MODULE__{members: members} = spec) do
    map
    |> put_members_parts(members)
    |> put_if("router", spec.router)
    |> Map.update!("rounds", &put_round_routers(&1, spec.rounds))
  end

  # to_map/1 sent Elixir routers as refs: put the routers back.
  defp put_round_routers(maps, rounds) when length(maps) == length(rounds) do
    Enum.zip_with(maps, rounds, fn m, %Round{} = r ->
      m =
        if r.router == nil,
          do: m,
          else: Map.update!(m, "options", &Map.put(&1, "router", r.router))

      if is_list(m["rounds"]),
        do: Map.update!(m, "rounds", &put_round_routers(&1, r.rounds)),
        else: m
    end)
  end

  defp put_round_routers(maps, _rounds), do: maps

  defp put_members_parts(map, members) do
    # to_map/1 turned modules into "module" options and tool functions into
    # handler "beam"; put back the atoms (so validate/1 does not need the
    # atom table) and the functions.
    members_by_id = Map.new(members, &{&1.id, &1})

    Map.update!(map, "members", fn ms ->
      Enum.map(ms, fn m ->
        case members_by_id[m["id"]] do
          %Member{} = member -> m |> put_module(member) |> put_tool_functions(member)
          _ -> m
        end
      end)
    end)
  end

  defp put_module(m, %Member{module: nil}), do: m

  defp put_module(m, %Member{module: mod}),
    do: m |> Map.put("provider", mod) |> Map.update!("options", &Map.delete(&1, "module"))

  defp put_tool_functions(m, %Member{tools: tools}) when tools == %{}, do: m

  defp put_tool_functions(m, %Member{tools: tools}) do
    Map.update!(m, "options", fn options ->
      case options do
        %{"tools" => list} when is_list(list) ->
          Map.put(
            options,
            "tools",
            Enum.map(list, fn
              %{"handler" => "beam", "name" => name} = t when is_map_key(tools, name) ->
                Map.put(t, "handler", tools[name])

              t ->
                t
            end)
          )

        _ ->
          options
      end
    end)
  end

  defp fetch_id(attrs) do
    case get(attrs, :id) do
      id when is_binary(id) and byte_size(id) >= @min_name_bytes -> {:ok, id}
      id when is_atom(id) and id not in [nil, true, false] -> {:ok, Atom.to_string(id)}
      nil -> {:error, "id: missing", "id"}
      other -> {:error, "id: expected a non-empty binary or an atom, got: #{inspect(other)}", "id"}
    end
  end

  defp members(nil),
    do: {:error, "members: missing (#{at_least(@min_members, "member")})", "members"}

  defp members(list) when is_list(list) and length(list) < @min_members,
    do: {:error, "members: #{too_few(list)} (#{at_least(@min_members, "member")})", "members"}

  defp members(list) when is_list(list) do
    members = list |> Enum.with_index() |> Enum.map(fn {m, i} -> member(m, "members[#{i}]") end)

    # the core's unique member key (the schema's unique_member_key: id)
    ids = Enum.map(members, & &1.id)

    case duplicates(ids) do
      [] ->
        {:ok, members}

      dups ->
        # the C node names the first id that repeats an earlier one
        second =
          Enum.reduce_while(Enum.with_index(ids), MapSet.new(), fn {id, i}, seen ->
            if MapSet.member?(seen, id), do: {:halt, i}, else: {:cont, MapSet.put(seen, id)}
          end)

        {:error, "members: duplicate #{@unique_key}s #{inspect(dups)}",
         "members[#{second}].#{@unique_key}"}
    end
  end

  defp members(other),
    do: {:error, "members: expected a list, got: #{inspect(other)}", "members"}

  defp member(m, path) do
    m = to_map(m, path, path)
    id = name!(get(m, :id), path <> ".id", path <> ".id")
    where = "member #{inspect(id)}"
    {explicit, extra} = split_options(m, [:id, :provider, :options, :module], where, path)
    options = extra |> Map.merge(explicit) |> retry_option!(where, path)

    {provider, module, options} =
      provider!(get(m, :provider), get(m, :module), options, where, path)

    options =
      if provider == :council,
        do: Map.put(options, "spec", sub_spec!(raw_spec(m), id, where, path)),
        else: options

    {options, tools} =
      if provider in @model_providers,
        do: model_options!(options, where, path <> ".options"),
        else: {options, %{}}

    %Member{id: id, provider: provider, module: module, options: options, tools: tools}
  end

  # A model member's options: the API key turned into api_key_env (or
  # refused), tools with function handlers sent as handler "beam" and
  # their functions returned apart. Errors carry the C node's paths.
  defp model_options!(options, where, path) do
    options = api_key!(options, where, path)

    case Map.fetch(options, "tools") do
      {:ok, list} when is_list(list) ->
        {list, tools} =
          list
          |> Enum.with_index()
          |> Enum.map_reduce(%{}, fn {t, k}, acc ->
            elixir_tool!(t, acc, where, "#{path}.tools[#{k}]")
          end)

        {Map.put(options, "tools", list), tools}

      _ ->
        {options, %{}}
    end
  end

  defp api_key!(options, where, path) do
    at = path <> ".api_key"

    case Map.fetch(options, "api_key") do
      :error ->
        options

      {:ok, nil} ->
        Map.delete(options, "api_key")

      {:ok, {:system, var}} when is_binary(var) and var != "" ->
        case Map.get(options, "api_key_env") do
          env when env in [nil, var] ->
            options |> Map.delete("api_key") |> Map.put("api_key_env", var)

          _ ->
            fail(
              "#{where}.options.api_key: give api_key: {:system, VAR} or api_key_env, not both",
              at
            )
        end

      {:ok, key} when is_binary(key) ->
        fail(
          "#{where}.options.api_key: a literal API key is not accepted in a spec (specs " <>
            "travel to the C node): use api_key: {:system, \"ENV_VAR\"}, or put the key in " <>
            "config :council_ex, providers: [<provider>: [api_key: ...]]",
          at
        )

      {:ok, _other} ->
        fail(
          "#{where}.options.api_key: must be {:system, \"ENV_VAR\"} (the C node's " <>
            "environment variable that holds the key)",
          at
        )
    end
  end

  # One entry of a model member's tools; a function handler is kept apart.
  defp elixir_tool!(%{"handler" => handler} = tool, acc, where, path)
       when is_function(handler) do
    unless is_function(handler, 1) do
      fail(
        "#{where}.options.tools: handler must be a function of one argument (the " <>
          "arguments map) or the name of a registered handler",
        path <> ".handler"
      )
    end

    name =
      case Map.get(tool, "name") do
        n when is_binary(n) and n != "" ->
          n

        _ ->
          fail(
            "#{where}.options.tools: name is required: 1 to 64 letters, digits, '_' or '-'",
            path <> ".name"
          )
      end

    # The first tool of a name is the one the C node calls.
    {Map.put(tool, "handler", "beam"), Map.put_new(acc, name, handler)}
  end

  defp elixir_tool!(tool, acc, _where, _path), do: {tool, acc}

  defp raw_spec(m) do
    case get(m, :spec) do
      nil ->
        case get(m, :options) do
          opts when is_map(opts) ->
            get(opts, :spec)

          opts when is_list(opts) ->
            if Keyword.keyword?(opts), do: opts[:spec] || List.keyfind(opts, "spec", 0), else: nil

          _ ->
            nil
        end

      spec ->
        spec
    end
  end

  # The spec of a `council` (sub-council) member, as the JSON map.
  defp sub_spec!(nil, _id, where, path),
    do:
      fail(
        "#{where}: provider council needs option spec (a council module, %CouncilEx.Spec{} or map)",
        path <> ".options.spec"
      )

  defp sub_spec!(%__MODULE__{} = spec, _id, where, path), do: sub_spec_map!(spec, where, path)

  defp sub_spec!(mod, id, where, path) when is_atom(mod) do
    if match?({:module, _}, Code.ensure_compiled(mod)) and function_exported?(mod, :__council__, 0),
      do: sub_spec!(mod.__council__(), id, where, path),
      else: fail("#{where}: spec #{inspect(mod)} is not a council module", path <> ".options.spec")
  end

  defp sub_spec!(spec, id, where, path) when is_map(spec) or is_list(spec) do
    spec = to_map(spec, where <> ".spec", path <> ".options.spec")
    spec = if get(spec, :id) == nil, do: Map.put(spec, "id", "sub:" <> id), else: spec

    case new(spec) do
      {:ok, sub} ->
        sub_spec_map!(sub, where, path)

      # The C node accepts the parent and fails each call of this member
      # with the nested spec's error: sent as it is (JSON-ready).
      {:error, _message} ->
        json_value(spec)
    end
  end

  defp sub_spec!(other, _id, where, path),
    do: fail("#{where}: bad sub-council spec #{inspect(other)}", path <> ".options.spec")

  # Tools with Elixir function handlers are served by the member server of
  # the run the library starts; a sub-council's nested run has none.
  defp sub_spec_map!(%__MODULE__{} = sub, where, path) do
    case Enum.find(sub.members, &(&1.tools != %{})) do
      nil ->
        to_map(sub)

      m ->
        fail(
          "#{where}: member #{inspect(m.id)} of the sub-council has tools with Elixir " <>
            "function handlers, which are served only for the members of the run itself",
          path <> ".options.spec"
        )
    end
  end

  defp provider!(nil, _module, _options, where, path),
    do: fail("#{where}: provider missing", path <> ".provider")

  defp provider!(native, _module, _options, where, path) when native in [:native, "native"] do
    fail(
      "#{where}: provider native is not available: the C node that serves runs has no " <>
        "native providers (C callbacks that a C host registers with council_provider_register); " <>
        "use mock, exec, council, a model provider (openai, openrouter, ollama, anthropic, " <>
        "gemini) or a module implementing CouncilEx.Member",
      path <> ".provider"
    )
  end

  defp provider!(p, module, options, where, path) when is_binary(p) do
    case Enum.find(@providers, &(Atom.to_string(&1) == p)) do
      nil ->
        unknown_provider!(p, where, path)

      atom ->
        provider!(atom, module, options, where, path)
    end
  end

  defp provider!(:beam, module, options, where, path) do
    {opt_module, options} = Map.pop(options, "module")

    case module || opt_module do
      nil ->
        fail(
          "#{where}: provider beam needs a module (provider: MyMember, or option module)",
          path <> ".provider"
        )

      mod when is_atom(mod) ->
        {:beam, mod, options}

      "Elixir." <> _ = name ->
        {:beam, module_atom!(name, where, path), options}

      name when is_binary(name) ->
        {:beam, module_atom!("Elixir." <> name, where, path), options}

      other ->
        fail("#{where}: module must be a module name, got: #{inspect(other)}", path)
    end
  end

  defp provider!(p, _module, options, _where, _path) when p in @providers, do: {p, nil, options}

  defp provider!(mod, _module, options, where, path) when is_atom(mod) do
    case Atom.to_string(mod) do
      "Elixir." <> _ ->
        {:beam, mod, Map.delete(options, "module")}

      _ ->
        unknown_provider!(mod, where, path)
    end
  end

  defp provider!(other, _, _, where, path),
    do: fail("#{where}: bad provider #{inspect(other)}", path <> ".provider")

  defp unknown_provider!(p, where, path) do
    fail(
      "#{where}: unknown provider #{inspect(p)} (expected one of #{inspect(@providers)} or a module)",
      path <> ".provider"
    )
  end

  defp module_atom!(name, where, path) do
    String.to_existing_atom(name)
  rescue
    ArgumentError -> fail("#{where}: unknown module #{inspect(name)}", path)
  end

  # A member's `retry: {max_attempts, base_ms}` is the core's member
  # options max_attempts and backoff_ms (their ranges are the core's).
  defp retry_option!(options, where, path) do
    case Map.pop(options, "retry") do
      {nil, options} ->
        options

      {{max, base_ms}, options} when is_integer(max) and is_integer(base_ms) ->
        Map.merge(options, %{"max_attempts" => max, "backoff_ms" => base_ms})

      {other, _} ->
        fail(
          "#{where}: retry must be {max_attempts, base_ms}, got: #{inspect(other)}",
          path <> ".options.retry"
        )
    end
  end

  # ------------------------------------------------------------------- rounds

  # Round names may repeat (the C node allows it). `where` names the list
  # in messages; `path` is the C node's path of the list ("rounds",
  # "rounds[1].options.rounds").
  defp rounds(nil, where, path),
    do: {:error, "#{where}: missing (#{at_least(@min_rounds, "round")})", path}

  defp rounds(list, where, path) when is_list(list) and length(list) < @min_rounds,
    do: {:error, "#{where}: #{too_few(list)} (#{at_least(@min_rounds, "round")})", path}

  defp rounds(list, where, path) when is_list(list) do
    rounds =
      list
      |> Enum.with_index()
      |> Enum.map(fn {r, i} -> round!(r, "#{where}[#{i}]", "#{path}[#{i}]") end)

    {:ok, rounds}
  end

  defp rounds(other, where, path),
    do: {:error, "#{where}: expected a list, got: #{inspect(other)}", path}

  defp round!(r, where, path) do
    r = to_map(r, where, path)
    type = round_type!(get(r, :type), where, path <> ".type")

    name =
      if get(r, :name) == nil,
        do: Atom.to_string(type),
        else: name!(get(r, :name), where <> ".name", path <> ".name")

    where = "round #{inspect(name)}"
    {router, r} = pop_router(r)
    router = router!(router, where <> ".router", path <> ".options.router")
    {explicit, extra} = split_options(r, [:type, :name, :options, :rounds], where, path)
    options = Map.merge(extra, explicit)
    options = normalize_round_options(type, options, where, path <> ".options")

    nested =
      case {type in @nesting_types, get(r, :rounds) || Map.get(options, "rounds")} do
        {true, nil} ->
          fail("#{where}: #{type} needs nested rounds", path <> ".options.rounds")

        {true, list} ->
          case rounds(list, where <> ".rounds", path <> ".options.rounds") do
            {:ok, rs} -> rs
            {:error, message, at} -> fail(message, at)
          end

        {false, nil} ->
          []

        {false, _} ->
          fail(
            "#{where}: only #{Enum.join(@nesting_types, ", ")} rounds have nested rounds",
            path <> ".options.rounds"
          )
      end

    %Round{
      type: type,
      name: name,
      options: Map.delete(options, "rounds"),
      rounds: nested,
      router: router
    }
  end

  # A round's router, from its own keys or its options, taken out before
  # the options become JSON (a module would become its name).
  defp pop_router(r) do
    {own, r} = pop_key(r, :router)

    case get(r, :options) do
      opts when is_map(opts) or is_list(opts) ->
        opts_map = if is_list(opts) and Keyword.keyword?(opts), do: Map.new(opts), else: opts

        if is_map(opts_map) do
          {in_opts, rest} = pop_key(opts_map, :router)
          key = if Map.has_key?(r, :options), do: :options, else: "options"
          {own || in_opts, Map.put(r, key, rest)}
        else
          {own, r}
        end

      _ ->
        {own, r}
    end
  end

  defp pop_key(map, key) do
    {a, map} = Map.pop(map, key)
    {b, map} = Map.pop(map, Atom.to_string(key))
    {a || b, map}
  end

  # A router (CouncilEx.Router): a function of two arguments, a module, a
  # registered name, or the core's rules / a core router (a map or keyword
  # list, sent as JSON for the C node to check).
  defp router!(nil, _where, _path), do: nil
  defp router!(fun, _where, _path) when is_function(fun, 2), do: fun
  defp router!(name, _where, _path) when is_binary(name) and name != "", do: name
  defp router!(mod, _where, _path) when is_atom(mod) and mod not in [true, false], do: mod
  defp router!(%{} = map, _where, _path) when not is_struct(map), do: json_value(map)

  defp router!([{k, _} | _] = list, where, path) when is_atom(k) do
    if Keyword.keyword?(list), do: json_value(Map.new(list)), else: bad_router!(list, where, path)
  end

  defp router!(other, where, path), do: bad_router!(other, where, path)

  defp bad_router!(other, where, path),
    do:
      fail(
        "#{where}: expected a function of two arguments, a module, a registered name or " <>
          "rules, got: #{inspect(other)}",
        path
      )

  # A round's options as the core's schema describes them
  # (CouncilEx.Schema.round_options/1): member references are normalised
  # (atoms become ids) and checked here, for every round; the options of
  # the round's own type (iterate's max_iterations and until, ...) are
  # checked as their kind says. The options every round has (failure_mode,
  # instructions) are left to the core's verdict (CouncilEx.validate/1 and
  # every start give it), and routers are taken out before (pop_router/1).
  defp normalize_round_options(type, options, where, path) do
    own = CouncilEx.Schema.round_options(type, own: true)

    Enum.reduce(CouncilEx.Schema.round_options(type), options, fn {name, rule}, acc ->
      case Map.fetch(acc, name) do
        {:ok, v} when v != nil ->
          at = "#{path}.#{name}"
          Map.put(acc, name, round_option!(rule, Map.has_key?(own, name), name, v, where, at))

        _ ->
          acc
      end
    end)
  end

  defp round_option!(%{"kind" => "member_ids"}, _own, name, [_ | _] = ids, where, path) do
    ids
    |> Enum.with_index()
    |> Enum.map(fn {m, j} -> name!(m, "#{where}.#{name}", "#{path}[#{j}]") end)
  end

  defp round_option!(%{"kind" => "member_ids"}, _own, name, other, where, path),
    do:
      fail(
        "#{where}: #{name} must be a non-empty list of member ids, got: #{inspect(other)}",
        path
      )

  defp round_option!(%{"kind" => "member_id"}, _own, name, id, where, path),
    do: name!(id, "#{where}.#{name}", path)

  defp round_option!(%{"kind" => "integer", "min" => min, "max" => max}, true, name, v, where, path) do
    if is_integer(v) and v >= min and v <= max,
      do: v,
      else:
        fail("#{where}: #{name} must be an integer from #{min} to #{max}, got: #{inspect(v)}", path)
  end

  defp round_option!(%{"kind" => "enum", "values" => values}, true, name, v, where, path) do
    if v in values,
      do: v,
      else:
        fail(
          "#{where}: #{name} must be #{Enum.map_join(values, " or ", &inspect/1)}, got: #{inspect(v)}",
          path
        )
  end

  defp round_option!(_rule, _own, _name, v, _where, _path), do: v

  defp round_type!(nil, where, path), do: fail("#{where}: type missing", path)

  defp round_type!(type, where, path) when is_atom(type) do
    if type in @round_types, do: type, else: round_type!(Atom.to_string(type), where, path)
  end

  defp round_type!(type, where, path) when is_binary(type) do
    case Enum.find(@round_types, &(Atom.to_string(&1) == type)) do
      nil ->
        fail(
          "#{where}: unknown round type #{inspect(type)} (expected one of #{inspect(@round_types)})",
          path
        )

      atom ->
        atom
    end
  end

  defp round_type!(other, where, path),
    do: fail("#{where}: bad round type #{inspect(other)}", path)

  # Every option of kind member_ids / member_id (CouncilEx.Schema) names
  # members of this council.
  defp check_round_members(rounds, members) do
    ids = MapSet.new(members, & &1.id)

    Enum.each(all_rounds(rounds, "rounds"), fn {r, path} ->
      for {name, %{"kind" => kind}} <- CouncilEx.Schema.round_options(r.type),
          kind in ["member_ids", "member_id"],
          refs = Map.get(r.options, name),
          refs != nil,
          {id, at} <- member_refs(kind, refs, "#{path}.options.#{name}"),
          not MapSet.member?(ids, id) do
        fail("round #{inspect(r.name)}: #{name} names unknown member #{inspect(id)}", at)
      end
    end)
  end

  defp member_refs("member_id", id, path), do: [{id, path}]

  defp member_refs("member_ids", ids, path),
    do: ids |> Enum.with_index() |> Enum.map(fn {id, j} -> {id, "#{path}[#{j}]"} end)

  # Every round, nested ones too, with its C node path.
  defp all_rounds(rounds, prefix) do
    rounds
    |> Enum.with_index()
    |> Enum.flat_map(fn {r, i} ->
      path = "#{prefix}[#{i}]"
      [{r, path} | all_rounds(r.rounds, path <> ".options.rounds")]
    end)
  end

  # -------------------------------------------------------------- chair/limits

  defp chair(nil, _members), do: {:ok, nil}

  defp chair(chair, members) do
    id = name!(chair, "chair", "chair")

    if Enum.any?(members, &(&1.id == id)),
      do: {:ok, id},
      else: {:error, "chair: #{inspect(id)} is not a member", "chair"}
  end

  defp limits(nil), do: {:ok, %{}}

  defp limits(limits) when is_map(limits) or is_list(limits) do
    limits = to_map(limits, "limits", "limits")

    Enum.reduce_while(limits, {:ok, %{}}, fn {k, v}, {:ok, acc} ->
      key = Enum.find(@limit_keys, &(&1 == k or Atom.to_string(&1) == k))

      cond do
        key == nil ->
          {:halt,
           {:error, "limits: unknown key #{inspect(k)} (expected #{inspect(@limit_keys)})",
            "limits"}}

        v == nil ->
          {:cont, {:ok, acc}}

        # The C node's bounds; 0 is one attempt for max_attempts and no
        # bound for concurrency there.
        not is_integer(v) or v < 0 or v > @limit_max[key] ->
          {:halt,
           {:error,
            "limits.#{key}: must be an integer from 0 to #{@limit_max[key]}, got: #{inspect(v)}",
            "limits.#{key}"}}

        true ->
          {:cont, {:ok, Map.put(acc, key, v)}}
      end
    end)
  end

  defp limits(other), do: {:error, "limits: expected a map, got: #{inspect(other)}", "limits"}

  # ------------------------------------------------------------------ helpers

  # An error: its message, and the C node's path of the field it is about.
  defp fail(message, path), do: throw({:spec_error, message, path})

  defp to_map(map, _where, _path) when is_map(map) and not is_struct(map), do: map
  defp to_map(%_{} = struct, _where, _path), do: Map.from_struct(struct)

  defp to_map(list, where, path) when is_list(list) do
    if Keyword.keyword?(list),
      do: Map.new(list),
      else: fail("#{where}: expected a map or keyword list, got: #{inspect(list)}", path)
  end

  defp to_map(other, where, path),
    do: fail("#{where}: expected a map or keyword list, got: #{inspect(other)}", path)

  defp get(map, key) do
    case Map.fetch(map, key) do
      {:ok, v} -> v
      :error -> Map.get(map, Atom.to_string(key))
    end
  end

  # Splits a member/round map into its explicit `options` and the extra keys
  # (everything but `known`), both with binary keys.
  # (`path`: the member's or round's; its options are at path.options)
  defp split_options(map, known, where, path) do
    known_strings = Enum.map(known, &Atom.to_string/1)
    at = path <> ".options"

    extra =
      for {k, v} <- map, k not in known, k not in known_strings, into: %{} do
        {key!(k, where, at), json_value(v)}
      end

    explicit =
      case get(map, :options) do
        nil ->
          %{}

        opts when is_map(opts) or is_list(opts) ->
          Map.new(to_map(opts, where <> ".options", at), fn {k, v} ->
            {key!(k, where, at), json_value(v)}
          end)

        other ->
          fail("#{where}: options must be a map, got: #{inspect(other)}", at)
      end

    {explicit, extra}
  end

  defp key!(k, _where, _path) when is_binary(k), do: k
  defp key!(k, _where, _path) when is_atom(k), do: Atom.to_string(k)

  defp key!(k, where, path),
    do: fail("#{where}: option keys must be atoms or binaries, got: #{inspect(k)}", path)

  # Option values go out as JSON: keyword lists become objects, maps get
  # binary keys, so DSL (atom keys) and JSON (binary keys) agree.
  defp json_value(v) when is_map(v) and not is_struct(v),
    do: Map.new(v, fn {k, x} -> {json_key(k), json_value(x)} end)

  defp json_value([{k, _} | _] = list) when is_atom(k) do
    if Keyword.keyword?(list), do: json_value(Map.new(list)), else: Enum.map(list, &json_value/1)
  end

  defp json_value(list) when is_list(list), do: Enum.map(list, &json_value/1)
  defp json_value(v) when is_atom(v) and v not in [nil, true, false], do: Atom.to_string(v)
  defp json_value(v), do: v

  defp json_key(k) when is_atom(k), do: Atom.to_string(k)
  defp json_key(k), do: k

  defp name!(v, _where, _path) when is_binary(v) and byte_size(v) >= @min_name_bytes, do: v

  defp name!(v, _where, _path) when is_atom(v) and v not in [nil, true, false],
    do: Atom.to_string(v)

  defp name!(v, where, path),
    do: fail("#{where}: expected a non-empty binary or atom, got: #{inspect(v)}", path)

  defp check_unknown(map, known, where) do
    known_strings = Enum.map(known, &Atom.to_string/1)

    case for k <- Map.keys(map), k not in known, k not in known_strings, do: k do
      [] -> :ok
      keys -> {:error, "#{where}: unknown keys #{inspect(keys)}", where}
    end
  end

  defp at_least(1, what), do: "a council needs at least one #{what}"
  defp at_least(n, what), do: "a council needs at least #{n} #{what}s"

  defp too_few([]), do: "empty"
  defp too_few(list), do: "#{length(list)} are too few"

  defp duplicates(list), do: (list -- Enum.uniq(list)) |> Enum.uniq()

  defp put_if(map, _k, nil), do: map
  defp put_if(map, k, v), do: Map.put(map, k, v)
end
