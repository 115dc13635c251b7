
Ã
^
$01890a61-cccc-7ddd-8eee-ffff00001111€½ë¦1 *words2$01890a5f-1111-7222-8333-4444555566666spiffe://fuzz.meldnet.test/provider/NL/example-hostingôÀë¦1""spiffe://fuzz.meldnet.test/node/NL@%~K|f7(°åM­µÓËb}F'D¯3iS(íŸ‡Û>aÐm¢(LøZcºÇå&y˜®5R’Ø1325b850c2871916