defmodule CouncilEx.JSON do
  @moduledoc """
  JSON (RFC 8259) for the library, in plain Elixir: no NIF, no system
  package. Objects decode to maps with binary keys, `null` is `nil` both
  ways.

      iex> CouncilEx.JSON.decode(~s({"a": [1, null]}))
      {:ok, %{"a" => [1, nil]}}

  Encoding: maps (atom or binary keys) are objects, lists arrays, binaries
  strings (they must be valid UTF-8; `"`, `\\` and control characters are
  escaped, everything else is written as is), `nil` is `null`, `true` and
  `false` themselves, other atoms strings, integers of any size and floats
  (shortest form that reads back the same) numbers. A `{proplist}` tuple is
  an object too (jiffy's form). Anything else (tuples, pids, functions) has
  no JSON form: `{:error, {:invalid_ejson, term}}`.

  Decoding: `\\uXXXX` escapes with surrogate pairs (a lone surrogate is an
  error), integers of any size, numbers with a fraction or an exponent as
  floats (an error when out of the float range), invalid UTF-8 and raw
  control characters in strings refused, a later duplicate key wins,
  anything but whitespace after the value refused. Errors are
  `{:error, {position, reason}}` with the byte offset.
  """

  @doc "Encodes a term (maps with atom or binary keys, lists, scalars) as a JSON binary."
  @spec encode(term) :: {:ok, binary} | {:error, term}
  def encode(term) do
    {:ok, IO.iodata_to_binary(enc(term))}
  catch
    :throw, {__MODULE__, reason} -> {:error, reason}
  end

  @doc "Like `encode/1`; raises `ArgumentError` when the term has no JSON form."
  @spec encode!(term) :: binary
  def encode!(term) do
    case encode(term) do
      {:ok, json} -> json
      {:error, reason} -> raise ArgumentError, "cannot encode as JSON: #{inspect(reason)}"
    end
  end

  @doc "Decodes a JSON binary."
  @spec decode(binary) :: {:ok, term} | {:error, term}
  def decode(json) when is_binary(json) do
    {value, rest} = value(skip_ws(json), json)

    case skip_ws(rest) do
      "" -> {:ok, value}
      more -> fail(json, more, :trailing_data)
    end
  catch
    :throw, {__MODULE__, reason} -> {:error, reason}
  end

  # ------------------------------------------------------------ encoding

  defp enc(nil), do: "null"
  defp enc(true), do: "true"
  defp enc(false), do: "false"
  defp enc(a) when is_atom(a), do: enc_string(Atom.to_string(a))
  defp enc(b) when is_binary(b), do: enc_string(b)
  defp enc(i) when is_integer(i), do: Integer.to_string(i)
  defp enc(f) when is_float(f), do: :erlang.float_to_binary(f, [:short])
  defp enc(m) when is_map(m) and not is_struct(m), do: enc_object(Map.to_list(m))
  defp enc({props}) when is_list(props), do: enc_object(props)
  defp enc(l) when is_list(l), do: enc_array(l, [])
  defp enc(other), do: throw({__MODULE__, {:invalid_ejson, other}})

  defp enc_array([], []), do: "[]"
  defp enc_array([], acc), do: ["[", tl(:lists.reverse(acc)), "]"]
  defp enc_array([x | rest], acc), do: enc_array(rest, [enc(x), "," | acc])
  defp enc_array(improper, _), do: throw({__MODULE__, {:invalid_ejson, improper}})

  defp enc_object([]), do: "{}"

  defp enc_object(pairs) do
    body =
      Enum.map_intersperse(pairs, ",", fn
        {k, v} -> [enc_key(k), ":", enc(v)]
        other -> throw({__MODULE__, {:invalid_ejson, other}})
      end)

    ["{", body, "}"]
  end

  defp enc_key(k) when is_binary(k), do: enc_string(k)
  defp enc_key(k) when is_atom(k) and k not in [nil, true, false], do: enc_string(Atom.to_string(k))
  defp enc_key(k), do: throw({__MODULE__, {:invalid_object_key, k}})

  defp enc_string(s) do
    if String.valid?(s),
      do: [?", escape(s, s, 0, 0, []), ?"],
      else: throw({__MODULE__, {:invalid_string, s}})
  end

  # Copies runs of plain bytes as slices of the original; escapes the rest.
  defp escape(<<>>, orig, start, len, acc), do: :lists.reverse([slice(orig, start, len) | acc])

  defp escape(<<c, rest::binary>>, orig, start, len, acc) when c < 0x20 or c in [?", ?\\] do
    acc = [esc(c), slice(orig, start, len) | acc]
    escape(rest, orig, start + len + 1, 0, acc)
  end

  defp escape(<<_, rest::binary>>, orig, start, len, acc),
    do: escape(rest, orig, start, len + 1, acc)

  defp slice(_orig, _start, 0), do: ""
  defp slice(orig, start, len), do: binary_part(orig, start, len)

  defp esc(?"), do: "\\\""
  defp esc(?\\), do: "\\\\"
  defp esc(?\n), do: "\\n"
  defp esc(?\r), do: "\\r"
  defp esc(?\t), do: "\\t"
  defp esc(?\b), do: "\\b"
  defp esc(?\f), do: "\\f"

  defp esc(c) do
    hex = Integer.to_string(c, 16)
    ["\\u", String.duplicate("0", 4 - byte_size(hex)), hex]
  end

  # ------------------------------------------------------------ decoding

  defp skip_ws(<<c, rest::binary>>) when c in [?\s, ?\t, ?\n, ?\r], do: skip_ws(rest)
  defp skip_ws(rest), do: rest

  defp value(<<?{, rest::binary>>, all), do: object(skip_ws(rest), all, [])
  defp value(<<?[, rest::binary>>, all), do: array(skip_ws(rest), all, [])
  defp value(<<?", rest::binary>>, all), do: string(rest, all, rest, 0, [])
  defp value(<<"true", rest::binary>>, _all), do: {true, rest}
  defp value(<<"false", rest::binary>>, _all), do: {false, rest}
  defp value(<<"null", rest::binary>>, _all), do: {nil, rest}
  defp value(<<c, _::binary>> = s, all) when c == ?- or c in ?0..?9, do: number(s, all)
  defp value("", all), do: fail(all, "", :unexpected_end)
  defp value(s, all), do: fail(all, s, :unexpected_byte)

  defp object(<<?}, rest::binary>>, _all, []), do: {%{}, rest}

  defp object(<<?", rest::binary>>, all, acc) do
    {key, rest} = string(rest, all, rest, 0, [])

    case skip_ws(rest) do
      <<?:, rest::binary>> ->
        {v, rest} = value(skip_ws(rest), all)
        acc = [{key, v} | acc]

        case skip_ws(rest) do
          <<?,, rest::binary>> -> object(skip_ws(rest), all, acc)
          <<?}, rest::binary>> -> {Map.new(:lists.reverse(acc)), rest}
          other -> fail(all, other, :expected_comma_or_brace)
        end

      other ->
        fail(all, other, :expected_colon)
    end
  end

  defp object(s, all, _acc), do: fail(all, s, :expected_key)

  defp array(<<?], rest::binary>>, _all, []), do: {[], rest}

  defp array(s, all, acc) do
    {v, rest} = value(s, all)

    case skip_ws(rest) do
      <<?,, rest::binary>> -> array(skip_ws(rest), all, [v | acc])
      <<?], rest::binary>> -> {:lists.reverse([v | acc]), rest}
      other -> fail(all, other, :expected_comma_or_bracket)
    end
  end

  # A string from just after its opening quote: runs of plain bytes are
  # taken as slices of `run` (where the current run starts), then checked
  # for UTF-8 once the string ends.
  defp string(<<?", rest::binary>>, all, run, len, acc) do
    s = IO.iodata_to_binary(:lists.reverse([binary_part(run, 0, len) | acc]))

    if String.valid?(s), do: {s, rest}, else: fail(all, rest, :invalid_utf8)
  end

  defp string(<<?\\, e, rest::binary>> = here, all, run, len, acc) do
    acc = [binary_part(run, 0, len) | acc]

    case e do
      ?" -> string(rest, all, rest, 0, [?" | acc])
      ?\\ -> string(rest, all, rest, 0, [?\\ | acc])
      ?/ -> string(rest, all, rest, 0, [?/ | acc])
      ?b -> string(rest, all, rest, 0, [?\b | acc])
      ?f -> string(rest, all, rest, 0, [?\f | acc])
      ?n -> string(rest, all, rest, 0, [?\n | acc])
      ?r -> string(rest, all, rest, 0, [?\r | acc])
      ?t -> string(rest, all, rest, 0, [?\t | acc])
      ?u -> unicode_escape(rest, all, here, acc)
      _ -> fail(all, here, :invalid_escape)
    end
  end

  defp string(<<c, _::binary>> = here, all, _run, _len, _acc) when c < 0x20,
    do: fail(all, here, :control_character_in_string)

  defp string(<<_, rest::binary>>, all, run, len, acc), do: string(rest, all, run, len + 1, acc)
  defp string(<<>>, all, _run, _len, _acc), do: fail(all, "", :unterminated_string)

  defp unicode_escape(<<h::binary-size(4), rest::binary>>, all, here, acc) do
    case hex4(h) do
      hi when hi in 0xD800..0xDBFF ->
        with <<"\\u", l::binary-size(4), rest2::binary>> <- rest,
             lo when lo in 0xDC00..0xDFFF <- hex4(l) do
          cp = 0x10000 + Bitwise.bsl(hi - 0xD800, 10) + (lo - 0xDC00)
          string(rest2, all, rest2, 0, [<<cp::utf8>> | acc])
        else
          _ -> fail(all, here, :lone_surrogate)
        end

      lo when lo in 0xDC00..0xDFFF ->
        fail(all, here, :lone_surrogate)

      cp when is_integer(cp) ->
        string(rest, all, rest, 0, [<<cp::utf8>> | acc])

      nil ->
        fail(all, here, :invalid_escape)
    end
  end

  defp unicode_escape(_short, all, here, _acc), do: fail(all, here, :invalid_escape)

  defp hex4(h) do
    if h =~ ~r/\A[0-9A-Fa-f]{4}\z/, do: String.to_integer(h, 16), else: nil
  end

  # -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  defp number(s, all) do
    {neg, s1} =
      case s do
        <<?-, r::binary>> -> {"-", r}
        r -> {"", r}
      end

    {int, s2} =
      case s1 do
        <<?0, r::binary>> -> {"0", r}
        <<c, _::binary>> when c in ?1..?9 -> digits(s1)
        _ -> fail(all, s1, :invalid_number)
      end

    {frac, s3} =
      case s2 do
        <<?., r::binary>> ->
          case digits(r) do
            {"", _} -> fail(all, r, :invalid_number)
            {d, r2} -> {d, r2}
          end

        _ ->
          {nil, s2}
      end

    {exp, s4} =
      case s3 do
        <<e, r::binary>> when e in [?e, ?E] ->
          {sign, r} =
            case r do
              <<sg, r2::binary>> when sg in [?+, ?-] -> {<<sg>>, r2}
              _ -> {"", r}
            end

          case digits(r) do
            {"", _} -> fail(all, r, :invalid_number)
            {d, r2} -> {sign <> d, r2}
          end

        _ ->
          {nil, s3}
      end

    cond do
      frac == nil and exp == nil ->
        {String.to_integer(neg <> int), s4}

      true ->
        text = neg <> int <> "." <> (frac || "0") <> if(exp, do: "e" <> exp, else: "")

        try do
          {:erlang.binary_to_float(text), s4}
        rescue
          ArgumentError -> fail(all, s, :number_out_of_range)
        end
    end
  end

  defp digits(s), do: digits(s, 0, s)
  defp digits(<<c, rest::binary>>, n, s) when c in ?0..?9, do: digits(rest, n + 1, s)
  defp digits(rest, n, s), do: {binary_part(s, 0, n), rest}

  # rest is a suffix of all: its offset is where the problem is
  defp fail(all, rest, reason),
    do: throw({__MODULE__, {byte_size(all) - byte_size(rest), reason}})
end
