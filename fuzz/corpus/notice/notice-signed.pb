
Ã
$01890a61-cccc-7ddd-8eee-ffff00001111$01890a5e-0000-7abc-8def-0123456789ab" https://files.example.nl/a/1.jpg*"spiffe://fuzz.meldnet.test/node/NL2NL:M
example-hostingÄ¯6spiffe://fuzz.meldnet.test/provider/NL/example-hosting@JPÄ‡è•ê1XÄò©Œê1b¶
@4a33eacd5fa65f2b2e2871cd131286b53c415b131666d71173bb6e3fe59361b3 0123456789abcdef0123456789abcdef@ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffhr$01890a5d-ac96-7bb1-9c4e-6f2a3b4c5d6e@rB<ùÇÔÓØc÷·:Õ]R-âπ‘ÊmˇKì‘˘XLÃ`◊¯óuÃu¶∆Ë7≠,±µ2x6˘¸ú„ï±X1325b850c2871916